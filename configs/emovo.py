"""EMOVO (Italian): 7 emotions, 6 speakers, 14 sentences, 48 kHz clips of 1.5-7 s."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the EMOVO config: the paper's recipe on EMOVO's 7 classes."""
    config = default.get_config()
    config.data.dataset = "emovo"
    # File-name codes dis, gio, pau, rab, sor, tri, neu, in that order.
    config.data.class_names = (
        "disgust",
        "joy",
        "fear",
        "anger",
        "surprise",
        "sadness",
        "neutral",
    )
    config.data.num_frames = 251  # 4 s crop: clips average ~3 s.
    config.model.num_classes = 7
    return config
