"""Four acted and elicited English corpora on one 4-class set: IEMOCAP, RAVDESS, CREMA-D, ESD.

Each corpus must be prepared first (`tools/prepare_data.py --dataset=NAME ...`, with this
config's features). Fold k trains on fold k of every corpus's own speaker-independent protocol;
`--config.data.protocol=leave_one_corpus_out` instead tests on corpus k, trained on the others.
"""

import ml_collections

from configs import default


def _corpus(dataset: str, label_map: str = "", **fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"dataset": dataset, "label_map": label_map, **fields})


def get_config() -> ml_collections.ConfigDict:
    """Returns the multi-corpus config: the paper's recipe on neutral/happy/angry/sad."""
    config = default.get_config()
    config.data.dataset = "mixture"
    config.data.class_names = ("neutral", "happy", "angry", "sad")
    config.data.datasets = (
        _corpus("iemocap", label_set="4class"),
        # RAVDESS's and ESD's classes that share a name map by default; the rest are left out.
        _corpus("ravdess"),
        _corpus("crema_d", "anger=angry,happy=happy,neutral=neutral,sad=sad"),
        _corpus("esd"),
    )
    # ESD alone has ~28,000 clips of these classes: by size it would be most of every epoch.
    config.data.mixture = "equal"
    # 5 folds: the fewest of the four protocols (IEMOCAP's sessions, CREMA-D's actor groups).
    config.data.num_frames = 251  # 4 s crop: acted clips are 2-5 s, IEMOCAP's average ~4.5 s.
    config.model.num_classes = 4
    return config
