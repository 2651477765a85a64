"""The CPU demo: a small HRNet on the built-in synthetic corpus, minutes on a laptop."""

import pathlib
import runpy

import ml_collections

_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config() -> ml_collections.ConfigDict:
    """Returns the demo config: W18-Small-v1 on 64-band, 2 s crops of the synthetic corpus."""
    config = _default["get_config"]()
    config.data.dataset = "synthetic"
    config.data.n_mels = 64  # Fewer bands: a quarter of the paper's compute per example.
    config.data.num_frames = 126  # 2 s crop: 1 + 2 * 16000 / 256.
    config.model.variant = "w18_small_v1"
    config.batch_size = 32
    config.num_epochs = 15
    config.augment.freq_mask_width = 12  # Scaled with n_mels.
    config.augment.time_mask_width = 20  # Scaled with the crop.
    return config
