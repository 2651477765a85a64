"""IEMOCAP: the standard 4-class set (exc merged into hap), 10 speakers in 5 sessions, 16 kHz."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the IEMOCAP config: the paper's recipe on neutral/happy(+excited)/angry/sad."""
    config = default.get_config()
    config.data.dataset = "iemocap"
    config.data.label_set = "4class"  # exc merged into hap; or 4class_no_exc, 6class.
    config.data.class_names = ("neutral", "happy", "angry", "sad")
    config.data.num_frames = 438  # 7 s crop: 1 + 7 * 16000 / 256; utterances average ~4.5 s.
    config.model.num_classes = 4
    return config
