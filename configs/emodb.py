"""EmoDB (Berlin, German): 7 emotions, 10 speakers, 10 texts, 16 kHz clips of 1.2-9 s (535)."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the EmoDB config: the paper's recipe on EmoDB's 7 classes, leave-one-speaker-out."""
    config = default.get_config()
    config.data.dataset = "emodb"
    # File-name letters W, L, E, A, F, T, N (the German emotion words), in that order.
    config.data.class_names = (
        "anger",
        "boredom",
        "disgust",
        "fear",
        "happiness",
        "sadness",
        "neutral",
    )
    config.data.num_frames = 251  # 4 s crop: median clip 2.6 s, 90% under 3.9 s (EmoBox's list).
    config.model.num_classes = 7
    return config
