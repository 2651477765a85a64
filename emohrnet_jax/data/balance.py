"""Class imbalance: the training loss's class weights and a class-balanced training order.

Both are plain numpy functions of the training split's labels (in stored order), so they can be
tested on hand-made labels; no TensorFlow or JAX here.
"""

from collections.abc import Sequence

import numpy as np


def class_weights(labels: Sequence[int], class_names: Sequence[str]) -> tuple[float, ...]:
    """scikit-learn's "balanced" weights: `n / (k * count_c)` for each of the `k` classes.

    Over the `n` training examples the weights average to 1, so the weighted loss keeps the
    unweighted loss's scale.

    Raises:
      ValueError: a class has no training example (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    absent = [name for name, count in zip(class_names, counts, strict=False) if count == 0]
    if absent:
        raise ValueError(
            f"config.class_weights='balanced' needs every class in the training split, but "
            f"{absent} have no training example: use config.class_weights='none'"
        )
    return tuple(float(len(labels) / (len(class_names) * count)) for count in counts)


def balanced_order(labels: Sequence[int], num_draws: int, seed: int, epoch: int) -> np.ndarray:
    """`num_draws` indices into `labels` with every class present drawn equally often (+-1).

    Each position's class comes from a shuffled, evenly tiled sequence of the classes present;
    each class's positions take its examples from a stream of reshuffled copies of that class.
    A pure function of (`seed`, `epoch`): a resumed run, and every host, draws the same order.
    """
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng([seed, epoch])
    present = np.unique(labels)
    # Evenly tiled, not drawn one by one: the classes' counts differ by at most one.
    position_class = rng.permutation(np.resize(rng.permutation(present), num_draws))
    order = np.empty(num_draws, np.int64)
    for c in present:
        positions = np.flatnonzero(position_class == c)
        members = np.flatnonzero(labels == c)
        copies = -(-len(positions) // len(members))
        # Reshuffled copies, not draws with replacement: an example repeats only after its class.
        stream = np.concatenate([rng.permutation(members) for _ in range(copies)])
        order[positions] = stream[: len(positions)]
    return order
