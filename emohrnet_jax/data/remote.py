"""Prepared datasets in a gs:// bucket: built and read in a local mirror, copied with gcsfs.

tfds writes TFRecords, and tf.data reads them, through TensorFlow's GCS client, whose endpoint is
fixed: it could not be tested against a Cloud Storage emulator. So a gs:// `data_dir` has a local
mirror (`storage.local_mirror`) where builds are made and read, and the path layer that can be
pointed at any server (gcsfs) copies whole version folders: a build is uploaded with
`dataset_info.json` last (tfds counts a version folder holding it as prepared), and a reader
downloads the bucket's version folder when its files differ from the mirror's.
"""

import os
from typing import Any

import tensorflow_datasets as tfds

from emohrnet_jax import storage
from emohrnet_jax.data import builders

# The file whose presence makes a tfds version folder a finished build.
COMPLETE_MARKER = "dataset_info.json"


def _version_folder(builder: tfds.core.DatasetBuilder, mirror: str) -> str:
    """The builder's version folder relative to its data_dir (name/config/version)."""
    return os.path.relpath(builder.data_dir, mirror)


def local_data_dir(data_dir: str | None, dataset: str, config: Any) -> str | None:
    """The local data_dir to read `dataset`/`config` from: `data_dir` itself unless it is gs://.

    For gs://, the mirror is brought to the bucket's finished build first, or emptied of this
    build when the bucket has none (so that it is reported as not prepared, never read stale).
    """
    if data_dir is None or not storage.is_url(data_dir):
        return data_dir
    mirror = storage.local_mirror(data_dir)
    folder = _version_folder(tfds.builder(dataset, data_dir=mirror, config=config), mirror)
    url = f"{data_dir.rstrip('/')}/{folder}"
    if storage.exists(f"{url}/{COMPLETE_MARKER}"):
        storage.download_tree(url, os.path.join(mirror, folder))
    else:
        storage.remove_tree(os.path.join(mirror, folder))
    return mirror


def prepare(dataset: str, data_dir: str | None, **options: Any) -> dict[str, Any]:
    """`builders.prepare` at a local data_dir or a gs:// one (built in the mirror, uploaded).

    Returns the build summary; its `data_dir` is where the build is (the gs:// URL's folder).
    """
    if data_dir is None or not storage.is_url(data_dir):
        return builders.prepare(dataset, data_dir, **options)
    storage.check_writable(data_dir, "--data_dir")
    mirror = storage.local_mirror(data_dir)
    config = builders.make_config(
        dataset, options.get("feature_params"), **_config_options(options)
    )
    local_data_dir(data_dir, dataset, config)  # an unchanged build in the bucket is kept
    summary = builders.prepare(dataset, mirror, **options)
    folder = os.path.relpath(summary["data_dir"], mirror)
    url = f"{data_dir.rstrip('/')}/{folder}"
    storage.upload_tree(summary["data_dir"], url, last=[COMPLETE_MARKER])
    return {**summary, "data_dir": url}


def _config_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options of `builders.prepare` that name the build (its **options, not how it is run)."""
    run_only = ("manual_dir", "feature_params", "num_workers", "beam_options", "class_names")
    config_options = {k: v for k, v in options.items() if k not in run_only}
    if "csv_path" in config_options:
        config_options["csv_path"] = os.path.realpath(config_options["csv_path"])
    return config_options
