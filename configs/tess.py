"""TESS (Toronto): 7 emotions, 2 speakers, 200 words, 24.4 kHz clips of 1.3-3 s (2800)."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the TESS config: speaker-dependent folds, as its 2 speakers allow nothing else."""
    config = default.get_config()
    config.data.dataset = "tess"
    # File-name emotions angry, disgust, fear, happy, neutral, ps, sad, in that order.
    config.data.class_names = (
        "angry",
        "disgust",
        "fear",
        "happy",
        "neutral",
        "pleasant_surprise",
        "sad",
    )
    # 2 speakers cannot give train, validation and test speakers: utterance-level folds, which
    # warn and record speaker_independent false.
    config.data.protocol = "random"
    config.data.num_frames = 157  # 2.5 s crop: median clip 2.05 s, 90% under 2.5 s (EmoBox's list).
    config.model.num_classes = 7
    return config
