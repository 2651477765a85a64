"""RAVDESS speech (audio-only): 8 emotions, 24 actors, 48 kHz clips of 3-5 s."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the RAVDESS config: the paper's recipe on 8 classes in RAVDESS code order."""
    config = default.get_config()
    config.data.dataset = "ravdess"
    # Emotion codes 01..08 of the file names, in that order.
    config.data.class_names = (
        "neutral",
        "calm",
        "happy",
        "sad",
        "angry",
        "fearful",
        "disgust",
        "surprised",
    )
    config.data.num_frames = 251  # 4 s crop: most clips are 3-4 s with leading silence.
    config.model.num_classes = 8
    return config
