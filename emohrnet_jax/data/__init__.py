"""Data: corpus listings, tfds builders, speaker-independent splits and the input pipeline.

Importing this package registers the tfds builders `ravdess`, `iemocap`, `emovo`, `crema_d`,
`emodb`, `tess`, `savee`, `labelled_folder` and `synthetic`.
"""

from emohrnet_jax.data import builders  # noqa: F401  (registers the builders)
