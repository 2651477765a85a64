"""Many models in one program: runs of one config (folds x seeds) trained as a stack of members.

One jitted program (`jax.vmap` over the members' stacked train states) trains K runs at once, each
on its own fold and seed's batches, its own augmentation keys (its seed's root key folded with
its step, as alone), learning-rate schedule (its steps per epoch) and class weights;
`steps_per_dispatch` scans a block of steps in one dispatch. A member whose epoch is shorter
takes masked no-op steps (state unchanged) while the others finish theirs. Each member validates,
checkpoints and writes its results in its own workdir through emohrnet_jax.train's functions, so
its folder is a solo run's: it resumes stacked or alone. Runs in one process (no multi-host).
"""

import contextlib
import dataclasses
import functools
import itertools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn

from emohrnet_jax import checkpoints, config_check, models, run_config, steps, storage, train


@dataclasses.dataclass
class _Member:
    """One run of the stack: its fixed parts, its epoch history and its step (on the host)."""

    run: train.Run
    history: list[dict[str, Any]]
    step: int

    @property
    def epoch(self) -> int:
        return self.step // self.run.steps_per_epoch

    @property
    def offset(self) -> int:
        """Steps already taken in the current epoch (a solo run preempted mid-epoch has some)."""
        return self.step - self.epoch * self.run.steps_per_epoch


def check_stackable(configs: list[ml_collections.ConfigDict]) -> None:
    """Raises ValueError unless the configs differ at most in `seed` and `data.fold` (one program
    trains them all)."""

    def shared(config):
        values = run_config.as_json(config)
        values.pop("seed")
        values["data"].pop("fold")
        return values

    if any(shared(config) != shared(configs[0]) for config in configs[1:]):
        raise ValueError("the members of one program may differ only in seed and data.fold")
    if jax.process_count() > 1:
        raise ValueError("stacked members train in one process; run them alone on several hosts")


def memory(state: steps.TrainState) -> dict[str, int]:
    """The bytes of one member's parameters, optimizer state and BatchNorm statistics."""
    size = lambda tree: int(sum(x.nbytes for x in jax.tree.leaves(tree)))  # noqa: E731
    return {
        "params_bytes": size(state.params),
        "opt_state_bytes": size(state.opt_state),
        "batch_stats_bytes": size(state.batch_stats),
    }


def _switched(optimizers: list[optax.GradientTransformation], index: jax.Array):
    """The optimizer `optimizers[index]` (equal structure, other schedules) for a traced index."""
    if len(optimizers) == 1:
        return optimizers[0]

    def update(grads, state, params):
        branches = [optimizer.update for optimizer in optimizers]
        return jax.lax.switch(index, branches, grads, state, params)

    return optax.GradientTransformation(optimizers[0].init, update)


# Cached like steps' jitted steps: equal settings (the groups of a cross-validation) compile once.
@functools.cache
def _jit_stacked_block(
    model: nn.Module,
    optimizer: ml_collections.FrozenConfigDict,
    schedules: tuple[int, ...],
    augment_config: ml_collections.FrozenConfigDict,
    mesh: jax.sharding.Mesh,
) -> Callable:
    """`(states, batches, actives, keys, schedule, weights) -> (states, metrics)`: a scan over a
    block of steps (leading axis of `batches`, `actives`), each a vmap over members (next axis).

    `schedules` lists the distinct steps per epoch (`schedule` indexes it per member); a member's
    step where `actives` is False leaves its state as it was.
    """
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(None, None, "data")
    )
    optimizers = [steps.create_optimizer(optimizer, n) for n in schedules]

    def member_step(state, batch, active, key, schedule, weights):
        new, step_metrics = steps.train_step(
            state, batch, key, model, _switched(optimizers, schedule), augment_config, weights
        )
        kept = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
        return kept, {k: step_metrics[k] for k in ("loss", "accuracy")}

    stacked_step = jax.vmap(member_step)

    def block(states, batches, actives, keys, schedule, weights):
        def body(states, inputs):
            return stacked_step(states, *inputs, keys, schedule, weights)

        return jax.lax.scan(body, states, (batches, actives))

    return jax.jit(
        block,
        in_shardings=(replicated, batch_sharding, *[replicated] * 4),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


def member_state(stacked: steps.TrainState, k: int) -> steps.TrainState:
    """Member `k`'s train state of the stacked state."""
    # A static slice: `x[k]` would copy the index to the device, which training's guard refuses.
    return jax.tree.map(lambda x: jax.lax.index_in_dim(x, k, keepdims=False), stacked)


def train_members(
    configs: list[ml_collections.ConfigDict], workdirs: list[str], steps_per_dispatch: int = 1
) -> tuple[list[dict[str, Any]] | None, dict[str, int]]:
    """Trains each `configs[k]` in `workdirs[k]` as `train.train_and_evaluate` would, all in one
    program.

    Returns each member's results (None when preempted by SIGTERM, after saving the members in
    mid-epoch) and one member's memory (`memory`).
    """
    for config in configs:
        config_check.check(config)
        train.check_devices(config)
    check_stackable(configs)
    if steps_per_dispatch < 1:
        raise ValueError(f"steps_per_dispatch={steps_per_dispatch} must be at least 1")
    with contextlib.ExitStack() as stack:
        for workdir in workdirs:
            stack.enter_context(train.holding(workdir))
        members, states = [], []
        for config, workdir in zip(configs, workdirs, strict=True):
            run, state, history = train.set_up(config, workdir)
            members.append(_Member(run, history, int(state.step)))
            states.append(state)
        per_member = memory(states[0])
        logging.info(
            "%d members: %s bytes each, %s in all",
            len(members),
            per_member,
            {k: v * len(members) for k, v in per_member.items()},
        )
        replicated = jax.sharding.NamedSharding(
            members[0].run.batch_sharding.mesh, jax.sharding.PartitionSpec()
        )
        stacked = jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), replicated)
        del states  # the stack holds the members' only device copy
        stacked = _train_all(members, stacked, steps_per_dispatch)
        if stacked is None:
            return None, per_member
        results = []
        for k, member in enumerate(members):
            member.run.manager.wait_until_finished()
            results.append(
                train.final_results(member.run, member_state(stacked, k), member.history)
            )
        return results, per_member


def _train_all(members: list[_Member], stacked, block: int) -> steps.TrainState | None:
    """Trains every member to `num_epochs`, validating and saving each at its epochs' ends."""
    config, run = members[0].run.config, members[0].run
    schedules = tuple(sorted({m.run.steps_per_epoch for m in members}))
    mesh = run.batch_sharding.mesh
    program = _jit_stacked_block(
        models.create_model(config),
        steps.optimizer_settings(config),
        schedules,
        ml_collections.FrozenConfigDict(config.augment),
        mesh,
    )
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    weights = None
    if run.class_weights is not None:
        weights = np.array([m.run.class_weights for m in members], np.float32)
    schedule = np.array([schedules.index(m.run.steps_per_epoch) for m in members], np.int32)
    keys = jnp.stack([m.run.key for m in members])
    inputs = jax.device_put((keys, schedule, weights), replicated)
    preemption = train.Preemption()
    with jax.transfer_guard_host_to_device("disallow"):
        while (epoch := min(m.epoch for m in members)) < config.num_epochs:
            trained = _train_round(members, stacked, epoch, block, program, inputs, preemption)
            if trained is None:
                return None
            stacked, round_metrics = trained
            for k, train_metrics in round_metrics.items():
                state = member_state(stacked, k)
                train.end_epoch(members[k].run, state, epoch, train_metrics, members[k].history)
    return stacked


def _host_block(sources: list, lengths: list[int], start: int, block: int) -> tuple[dict, Any]:
    """Positions `start...start + block` of each member's epoch as (block, members, ...) arrays,
    zeros where a member has no step (its `actives` entry False)."""
    rows = [
        [
            next(source) if start + b < n else None
            for source, n in zip(sources, lengths, strict=True)
        ]
        for b in range(block)
    ]
    template = next(batch for row in rows for batch in row if batch is not None)
    batches = {
        key: np.stack(
            [
                np.stack([np.zeros_like(template[key]) if x is None else x[key] for x in row])
                for row in rows
            ]
        )
        for key in train.TRAIN_KEYS
    }
    return batches, np.array([[x is not None for x in row] for row in rows])


def _train_round(members, stacked, epoch: int, block: int, program, inputs, preemption):
    """Trains the members at `epoch` to its end (the others wait, untouched).

    Returns the stacked state and {member index: its epoch's train metrics (as
    `train._train_epoch`'s)}, or None when preempted (after saving the members in mid-epoch).
    """
    config, started = members[0].run.config, time.perf_counter()
    sources, lengths, firsts = [], [], [m.step for m in members]
    for m in members:
        if m.epoch != epoch:  # ahead (resumed from a later checkpoint): waits this epoch out
            sources.append(None)
            lengths.append(0)
            continue
        batches = m.run.fold.train_batches(
            config.batch_size, m.run.config.seed, epoch, 0, 1, config.data.sampling
        )
        sources.append(itertools.islice(batches, m.offset, m.run.steps_per_epoch))
        lengths.append(m.run.steps_per_epoch - m.offset)
    sharding = jax.sharding.NamedSharding(
        members[0].run.batch_sharding.mesh, jax.sharding.PartitionSpec(None, None, "data")
    )
    pending = []
    for start in range(0, max(lengths), block):
        batches, actives = _host_block(sources, lengths, start, block)
        device_batches = steps.global_batch(batches, train.TRAIN_KEYS, sharding)
        with jax.transfer_guard_host_to_device("allow"):
            device_actives = jax.device_put(actives, inputs[0].sharding)
        stacked, block_metrics = program(stacked, device_batches, device_actives, *inputs)
        pending.append((block_metrics, actives))
        for k, m in enumerate(members):
            m.step += int(actives[:, k].sum())
        if preemption.reached(start):
            _save_mid_epoch(members, stacked, pending, firsts, lengths)
            return None
    fetched = jax.device_get(pending)
    values = [_fetched(fetched, k, firsts[k], m) for k, m in enumerate(members)]
    seconds = time.perf_counter() - started
    return stacked, {
        k: {
            "loss": sum(v["loss"] for v in values[k]) / len(values[k]),
            "accuracy": sum(v["accuracy"] for v in values[k]) / len(values[k]),
            "steps": len(values[k]),
            "step": members[k].step,
            "seconds": seconds,
        }
        for k in range(len(members))
        if lengths[k]
    }


def _fetched(pending: list, k: int, first: int, member: _Member) -> list[dict[str, float]]:
    """Member `k`'s train metrics of its steps in `pending` (on the host), checked finite
    (`train.fetch_train_metrics`)."""
    taken = []
    for block_metrics, actives in pending:
        taken += [
            {name: block_metrics[name][b, k] for name in ("loss", "accuracy")}
            for b in np.flatnonzero(actives[:, k])
        ]
    return train.fetch_train_metrics(taken, first, member.run.manager)


def _save_mid_epoch(members, stacked, pending, firsts, lengths) -> None:
    """Saves each member in mid-epoch; one whose epoch is done but not validated is not saved
    and repeats that epoch from its last checkpoint on resuming (the same steps, the same
    state)."""
    fetched = jax.device_get(pending)
    for k, m in enumerate(members):
        if lengths[k] and m.offset:
            _fetched(fetched, k, firsts[k], m)  # a diverged state is not saved
            checkpoints.save(m.run.manager, m.step, member_state(stacked, k), m.history)
    for m in members:
        m.run.manager.wait_until_finished()
    logging.warning("Preempted: saved the members in mid-epoch; re-run to resume")


def train_groups(
    runs: list[tuple[ml_collections.ConfigDict, str]],
    members_per_program: int,
    steps_per_dispatch: int,
    report_path: str,
) -> bool:
    """Trains `runs` (config, workdir) `members_per_program` at a time (`train_members`) and writes
    the programs' memory to `report_path` (JSON); False when preempted."""
    programs = []
    for start in range(0, len(runs), members_per_program):
        group = runs[start : start + members_per_program]
        print(f"training {len(group)} runs in one program: {', '.join(w for _, w in group)}")
        results, per_member = train_members(
            [config for config, _ in group], [workdir for _, workdir in group], steps_per_dispatch
        )
        programs.append(
            {
                "workdirs": [workdir for _, workdir in group],
                "per_member": per_member,
                "total": {k: v * len(group) for k, v in per_member.items()},
            }
        )
        report = {
            "members_per_program": members_per_program,
            "steps_per_dispatch": steps_per_dispatch,
            "programs": programs,
        }
        storage.write_json_atomically(report_path, report)
        if results is None:
            return False
    return True
