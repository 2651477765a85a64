"""ESD: 5 emotions, 10 Mandarin + 10 English speakers, 350 clips each per emotion, 16 kHz."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the ESD config: the paper's recipe on ESD's 5 classes, speaker-independent folds."""
    config = default.get_config()
    config.data.dataset = "esd"
    # The release's order of the emotion folders and utterance numbers.
    config.data.class_names = ("neutral", "angry", "happy", "sad", "surprise")
    config.data.num_frames = 188  # 3 s crop: EmoBox lists most clips at 2-3.5 s.
    config.model.num_classes = 5
    # "speaker": 5 speaker-independent folds; "official": each speaker's train/evaluation/test
    # files (speaker-dependent, docs/data.md#esd).
    config.data.protocol = "speaker"
    return config
