"""Class imbalance and corpus mixtures: the training loss's class weights, and training orders
that draw classes (or corpora) in given shares.

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
    return _fill(position_class, labels, present, rng)


def weighted_order(
    groups: Sequence[int], shares: dict[int, float], num_draws: int, seed: int, epoch: int
) -> np.ndarray:
    """`num_draws` indices into `groups` (e.g. each training example's corpus), each group drawn
    in proportion to its share (largest remainders: within one draw of exact).

    Examples are taken from each group as in `balanced_order`, a pure function of (`seed`,
    `epoch`). Groups with no share, or no examples, are not drawn.
    """
    groups = np.asarray(groups, np.int64)
    rng = np.random.default_rng([seed, epoch])
    present = np.array([g for g in np.unique(groups) if shares.get(int(g), 0.0) > 0], np.int64)
    weights = np.array([shares[int(g)] for g in present], np.float64)
    exact = num_draws * weights / weights.sum()
    quotas = np.floor(exact).astype(np.int64)
    # The draws left after rounding down go to the largest remainders (ties: the lower group).
    quotas[np.argsort(quotas - exact, kind="stable")[: num_draws - quotas.sum()]] += 1
    position_group = rng.permutation(np.repeat(present, quotas))
    return _fill(position_group, groups, present, rng)


def _fill(
    position_group: np.ndarray, groups: np.ndarray, present: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The example drawn at each position: its group's examples, from a stream of reshuffled
    copies of that group."""
    order = np.empty(len(position_group), np.int64)
    for c in present:
        positions = np.flatnonzero(position_group == c)
        members = np.flatnonzero(groups == c)
        copies = -(-len(positions) // len(members))
        # Reshuffled copies, not draws with replacement: an example repeats only after its group.
        stream = np.concatenate([rng.permutation(members) for _ in range(copies)])
        order[positions] = stream[: len(positions)]
    return order
