"""Cloud TPU jobs through `gcloud`: create a TPU VM, install the project, train, follow, delete.

Every step is a `gcloud` (or `git`) argument list built here from a `Job`, so that a plan can be
printed (`--dry_run`: shell-quoted, one command per line) or run, and tests read the commands
without a cloud. The copy, the install and the training run on every worker (`--worker=all`);
on a multi-host slice the training command also gets `--distributed`, and its workdir must be a
`gs://` URL, the one folder every host sees. `tools/tpu.py` is the command line; docs/tpu.md
walks through a whole IEMOCAP fold.
"""

import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

# The worker's copy of the project, its training log and the training process's id file.
REMOTE_DIR = "~/emohrnet_jax"
REMOTE_TARBALL = "~/emohrnet_jax.tar.gz"
LOG_FILE = "~/emohrnet_jax_train.log"
PID_FILE = "~/emohrnet_jax_train.pid"
# The TPU VM images' Python is 3.10, older than the dependencies need: uv installs the tested
# 3.11 into the project's .venv, then the project with its [tpu] extra (JAX's `jax[tpu]`).
INSTALL = (
    "python3 -m pip install --user --upgrade uv && ~/.local/bin/uv venv --python=3.11 .venv && "
    "~/.local/bin/uv pip install --python=.venv/bin/python -e '.[tpu]'"
)
PYTHON = ".venv/bin/python"  # In REMOTE_DIR, where the install and the training run.
# Seconds between two looks at a queued resource's state.
POLL_SECONDS = 30.0

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ACCELERATOR = re.compile(r"^([a-z0-9]+)-(\d+)$")


class LaunchError(ValueError):
    """A job that cannot be launched as asked (a bad flag, a missing tool, a failed command)."""


@dataclasses.dataclass(frozen=True)
class _Generation:
    """What an accelerator type's name means for one TPU generation."""

    runtime_version: str  # Cloud TPU's software version for JAX (docs: "TPU software versions").
    cores_per_chip: int  # The type's number counts TensorCores (2 per chip) or chips (1).
    single_host_chips: tuple[int, ...]  # The slices that are one TPU VM.
    multi_host_chips: tuple[int, ...] = ()  # The 2D tori's slices; () = any multiple of 4 (3D).


_GENERATIONS = {
    "v4": _Generation("tpu-ubuntu2204-base", 2, (4,)),
    "v5p": _Generation("v2-alpha-tpuv5", 2, (4,)),
    "v5litepod": _Generation("v2-alpha-tpuv5-lite", 1, (1, 4, 8), (16, 32, 64, 128, 256)),
    "v6e": _Generation("v2-alpha-tpuv6e", 1, (1, 4, 8), (16, 32, 64, 128, 256)),
}
# Each TPU VM of a multi-host slice holds 4 chips (a 2x2 tile), in every generation above.
_CHIPS_PER_HOST = 4


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice: its accelerator type, chips and hosts (TPU VMs, the gcloud "workers")."""

    accelerator_type: str
    chips: int
    hosts: int
    runtime_version: str  # The generation's default.

    @property
    def multi_host(self) -> bool:
        return self.hosts > 1

    def describe(self) -> str:
        """One line for the printed plan."""
        if not self.multi_host:
            return f"{self.accelerator_type}: {self.chips} chips on 1 host"
        return (
            f"{self.accelerator_type}: {self.chips} chips on {self.hosts} hosts (multi-host): "
            "the same commands run on every worker (--worker=all), training with --distributed"
        )


def parse_slice(accelerator_type: str) -> Slice:
    """The slice that `accelerator_type` (v4-8, v4-32, v5litepod-8, v5p-16, v6e-16, ...) names.

    Raises:
      LaunchError: not an accelerator type of a generation this launcher knows.
    """
    match = _ACCELERATOR.match(accelerator_type)
    generation = _GENERATIONS.get(match.group(1)) if match else None
    known = ", ".join(f"{name}-N" for name in _GENERATIONS)
    if generation is None:
        raise LaunchError(f"--accelerator_type={accelerator_type}: not one of {known}")
    cores = int(match.group(2))
    chips, odd_cores = divmod(cores, generation.cores_per_chip)
    single_host = chips in generation.single_host_chips
    if generation.multi_host_chips:
        multi_host = chips in generation.multi_host_chips
    else:
        multi_host = chips > max(generation.single_host_chips) and chips % _CHIPS_PER_HOST == 0
    if odd_cores or not (single_host or multi_host):
        raise LaunchError(f"--accelerator_type={accelerator_type}: no such {match.group(1)} slice")
    hosts = 1 if single_host else chips // _CHIPS_PER_HOST
    return Slice(accelerator_type, chips, hosts, generation.runtime_version)


@dataclasses.dataclass(frozen=True)
class Job:
    """One training job on one TPU slice.

    Attributes:
      name: the TPU VM's name (and the queued resource's, with `queued`).
      zone: e.g. us-central2-b; the accelerator type must be offered there.
      slice: `parse_slice(accelerator_type)`; None where only the name matters (setup, logs,
        delete).
      train_args: the flags of `python -m emohrnet_jax.main` (--config=..., --workdir=gs://...).
      project: the Google Cloud project (default: gcloud's configured one).
      runtime_version: the TPU software version ('' = the generation's default).
      spot: a Spot TPU (cheaper, may be preempted: re-run `train` to resume).
      queued: request it as a queued resource, granted when capacity frees up.
    """

    name: str
    zone: str
    slice: Slice | None = None
    train_args: tuple[str, ...] = ()
    project: str | None = None
    runtime_version: str = ""
    spot: bool = False
    queued: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise LaunchError(
                f"--name={self.name}: lowercase letters, digits and hyphens, starting with a "
                "letter (at most 63)"
            )
        if not self.zone:
            raise LaunchError("--zone is required (e.g. us-central2-b for v4)")


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of a plan; `wait_for`: repeat it until it prints that (a queued resource)."""

    argv: tuple[str, ...]
    wait_for: str | None = None


def _tpus(job: Job, *args: str) -> tuple[str, ...]:
    project = (f"--project={job.project}",) if job.project else ()
    return ("gcloud", "compute", "tpus", *args, f"--zone={job.zone}", *project)


def _ssh(job: Job, worker: str, command: str) -> Step:
    return Step(_tpus(job, "tpu-vm", "ssh", job.name, f"--worker={worker}", f"--command={command}"))


def tarball(job: Job) -> str:
    """The local file `setup` packs the project's committed tree into."""
    return os.path.join(tempfile.gettempdir(), f"{job.name}-emohrnet_jax.tar.gz")


def _slice(job: Job, what: str) -> Slice:
    if job.slice is None:
        raise LaunchError(f"{what} needs --accelerator_type (e.g. v4-8)")
    return job.slice


def create_steps(job: Job) -> list[Step]:
    """Creates the TPU VM, or queues the request and waits until it is granted."""
    slice_ = _slice(job, "create")
    version = job.runtime_version or slice_.runtime_version
    spot = ("--spot",) if job.spot else ()
    if not job.queued:
        return [
            Step(
                _tpus(
                    job,
                    "tpu-vm",
                    "create",
                    job.name,
                    f"--accelerator-type={slice_.accelerator_type}",
                    f"--version={version}",
                    *spot,
                )
            )
        ]
    create = _tpus(
        job,
        "queued-resources",
        "create",
        job.name,
        f"--node-id={job.name}",
        f"--accelerator-type={slice_.accelerator_type}",
        f"--runtime-version={version}",
        *spot,
    )
    state = _tpus(job, "queued-resources", "describe", job.name, "--format=value(state.state)")
    return [Step(create), Step(state, wait_for="ACTIVE")]


def setup_steps(job: Job) -> list[Step]:
    """Packs the committed project (`git archive HEAD`), copies it to every worker, installs it."""
    archive = ("git", "-C", str(_ROOT), "archive", "--format=tar.gz", "-o", tarball(job), "HEAD")
    copy = _tpus(job, "tpu-vm", "scp", tarball(job), f"{job.name}:{REMOTE_TARBALL}", "--worker=all")
    install = (
        f"set -e; rm -rf {REMOTE_DIR}; mkdir -p {REMOTE_DIR}; "
        f"tar -xzf {REMOTE_TARBALL} -C {REMOTE_DIR}; cd {REMOTE_DIR}; {INSTALL}"
    )
    return [Step(archive), Step(copy), _ssh(job, "all", install)]


def training_command(job: Job) -> list[str]:
    """`python -m emohrnet_jax.main` with the job's flags (+ --distributed on a multi-host slice).

    Raises:
      LaunchError: no --config, or a --workdir that is not a gs:// URL.
    """
    slice_ = _slice(job, "train")
    args = list(job.train_args)
    if _flag_value(args, "config") is None:
        raise LaunchError("the training flags (after --) need --config=configs/....py")
    workdir = _flag_value(args, "workdir")
    if workdir is None or not workdir.startswith("gs://"):
        raise LaunchError(
            f"--workdir={workdir}: a TPU job's workdir must be gs://BUCKET/..., which every "
            "worker sees and which outlives the TPU VM"
        )
    if slice_.multi_host and _flag_value(args, "distributed") is None:
        args.append("--distributed")
    return [PYTHON, "-m", "emohrnet_jax.main", *args]


def _flag_value(args: Sequence[str], name: str) -> str | None:
    """The value of `--name=V` or `--name V` in `args` ('' for a bare `--name`), else None."""
    for index, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}":
            following = args[index + 1] if index + 1 < len(args) else ""
            return "" if following.startswith("--") else following
    return None


def train_steps(job: Job) -> list[Step]:
    """Starts the training on every worker in the background: an ssh drop does not stop it."""
    # The exit status ends the log, so `logs` shows how the run ended (75: preempted, re-run).
    script = f'{shlex.join(training_command(job))}; echo "emohrnet_jax exit status: $?"'
    start = (
        f"cd {REMOTE_DIR} || exit 1; : > {LOG_FILE}; "  # Made now: `logs` may start at once.
        f"nohup sh -c {shlex.quote(script)} > {LOG_FILE} 2>&1 < /dev/null & echo $! > {PID_FILE}"
    )
    return [_ssh(job, "all", start)]


def logs_steps(job: Job) -> list[Step]:
    """Follows worker 0's training log until the training ends (Ctrl-C stops only the following)."""
    follow = f'tail -n +1 --pid="$(cat {PID_FILE})" -f {LOG_FILE}'
    return [_ssh(job, "0", follow)]


def delete_steps(job: Job) -> list[Step]:
    """Deletes the TPU VM (and, with `queued`, its queued resource)."""
    if job.queued:
        return [Step(_tpus(job, "queued-resources", "delete", job.name, "--force", "--quiet"))]
    return [Step(_tpus(job, "tpu-vm", "delete", job.name, "--quiet"))]


def run_steps(job: Job) -> list[Step]:
    """Create, set up, train and follow the log: a whole job but the delete."""
    return create_steps(job) + setup_steps(job) + train_steps(job) + logs_steps(job)


STEPS: dict[str, Callable[[Job], list[Step]]] = {
    "create": create_steps,
    "setup": setup_steps,
    "train": train_steps,
    "logs": logs_steps,
    "delete": delete_steps,
    "run": run_steps,
}


def plan_lines(job: Job, steps: Sequence[Step]) -> list[str]:
    """The plan as shell lines: a comment on the slice, then each command, shell-quoted."""
    lines = [f"# {job.slice.describe()}"] if job.slice else []
    for step in steps:
        if step.wait_for:
            lines.append(f"# repeat until it prints {step.wait_for}:")
        lines.append(shlex.join(step.argv))
    return lines


def run_command(step: Step) -> str:
    """Runs one step, its output on the console (captured and returned for a wait step).

    Raises:
      LaunchError: the command failed.
    """
    try:
        result = subprocess.run(
            step.argv, check=True, text=True, stdout=subprocess.PIPE if step.wait_for else None
        )
    except subprocess.CalledProcessError as error:
        raise LaunchError(
            f"{shlex.join(step.argv)} failed (exit status {error.returncode})"
        ) from None
    except OSError as error:  # e.g. git not installed
        raise LaunchError(f"{step.argv[0]}: {error.strerror}") from None
    return result.stdout or ""


def execute(
    job: Job,
    steps: Sequence[Step],
    dry_run: bool = False,
    runner: Callable[[Step], str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Prints the plan (`dry_run`: and nothing else), or runs its steps in order.

    Args:
      runner: runs one step and returns what it printed (default: `run_command`, which needs
        `gcloud` installed).

    Raises:
      LaunchError: `gcloud` is not installed, a step failed, or a queued resource failed.
    """
    if dry_run:
        print("\n".join(plan_lines(job, steps)))
        return
    if runner is None:
        runner = run_command
        if shutil.which("gcloud") is None:
            raise LaunchError(
                "gcloud not found: install the Google Cloud CLI (cloud.google.com/sdk), or pass "
                "--dry_run to print the commands"
            )
    if job.slice:
        print(f"# {job.slice.describe()}", file=sys.stderr)
    for step in steps:
        print(f"+ {shlex.join(step.argv)}", file=sys.stderr)
        if step.wait_for:
            _wait(step, runner, sleep)
        else:
            runner(step)


def _wait(step: Step, runner: Callable[[Step], str], sleep: Callable[[float], None]) -> None:
    """Repeats `step` until it prints `step.wait_for`; a failed or suspended request is an error."""
    previous = None
    while (state := runner(step).strip()) != step.wait_for:
        if state in ("FAILED", "SUSPENDED"):
            raise LaunchError(f"the queued resource is {state}: {shlex.join(step.argv)}")
        if state != previous:
            print(f"  {state}: waiting for {step.wait_for}", file=sys.stderr)
            previous = state
        sleep(POLL_SECONDS)
