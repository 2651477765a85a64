"""SAVEE (Surrey): 7 emotions, 4 male speakers, 44.1 kHz clips of 1.6-7.1 s (480)."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the SAVEE config: the paper's recipe on 7 classes, leave-one-speaker-out."""
    config = default.get_config()
    config.data.dataset = "savee"
    # File-name prefixes a, d, f, h, n, sa, su, in that order.
    config.data.class_names = (
        "anger",
        "disgust",
        "fear",
        "happiness",
        "neutral",
        "sadness",
        "surprise",
    )
    config.data.num_frames = 251  # 4 s crop: median clip 3.7 s (EmoBox's list); longest 7.1 s.
    config.model.num_classes = 7
    return config
