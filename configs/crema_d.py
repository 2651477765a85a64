"""CREMA-D: 6 emotions, 91 actors, 12 sentences, 16 kHz clips of 1.3-5 s (7442)."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the CREMA-D config: the paper's recipe on CREMA-D's 6 classes."""
    config = default.get_config()
    config.data.dataset = "crema_d"
    # File-name codes ANG, DIS, FEA, HAP, NEU, SAD, in that order.
    config.data.class_names = ("anger", "disgust", "fear", "happy", "neutral", "sad")
    config.data.num_frames = 188  # 3 s crop: median clip 2.5 s, 90% under 3.2 s (EmoBox's list).
    config.model.num_classes = 6
    return config
