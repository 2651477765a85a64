"""MSP-Podcast: 8 primary emotions of podcast segments, in the release's official partitions."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the MSP-Podcast config: train on Train, validate on Development, test on Test1."""
    config = default.get_config()
    config.data.dataset = "msp_podcast"
    # EmoClass codes A, S, H, U, F, D, C, N, in that order (X and O are left out).
    config.data.class_names = (
        "anger",
        "sad",
        "happy",
        "surprise",
        "fear",
        "disgust",
        "contempt",
        "neutral",
    )
    config.data.num_frames = 376  # 6 s crop: 1 + 6 * 16000 / 256; turns outlast acted clips.
    config.model.num_classes = 8
    config.data.protocol = "official"  # The only one: the folds are the release's partitions.
    config.data.test_partition = "Test1"  # Or Test2 (any Split_Set the release has).
    return config
