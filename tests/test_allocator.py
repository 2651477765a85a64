"""Tests of emohrnet_jax.allocator: the restart with glibc malloc tunables, and its effect."""

import os
import platform
import subprocess
import sys

import pytest

from emohrnet_jax import allocator
from tests import helpers

glibc_only = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc"
)

# Restarts with the tunables, then prints MiB page-faulted per call of a jitted function whose
# output (64 MiB) XLA allocates anew on every call, and this process's GLIBC_TUNABLES.
_FAULTS = """
import os, resource, sys
from emohrnet_jax import allocator
allocator.restart_with_tunables()
import jax, jax.numpy as jnp
function = jax.jit(lambda x: jnp.sin(x) * 2 + jnp.cos(x).sum(axis=0))
x = jnp.ones((4096, 4096))
for _ in range(2):
    function(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    function(x).block_until_ready()
faulted = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4 * 4096 / 2**20
print(faulted, repr(os.environ.get("GLIBC_TUNABLES")), sys.argv[1:])
"""


def _run_faults(**environment: str) -> tuple[float, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.CONFIGS.parent), **environment)
    result = subprocess.run(
        [sys.executable, "-c", _FAULTS, "--flag=1", "two"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    faulted, tunables, argv = result.stdout.strip().split(" ", 2)
    return float(faulted), tunables, argv


@pytest.mark.slow
@glibc_only
def test_the_restarted_process_reuses_memory_instead_of_faulting_it_in():
    faulted, tunables, argv = _run_faults()
    assert tunables == repr(allocator.TUNABLES)
    assert argv == "['--flag=1', 'two']"  # Same arguments after the restart.
    assert faulted < 8, f"{faulted:.1f} MiB page-faulted per call with the tunables"
    # glibc's defaults, kept by an empty GLIBC_TUNABLES: the 64 MiB output is mapped anew each call.
    faulted, tunables, _ = _run_faults(GLIBC_TUNABLES="")
    assert tunables == "''"
    assert faulted > 60, f"only {faulted:.1f} MiB page-faulted per call without the tunables"


def test_the_heap_is_never_trimmed_on_this_machine():
    # The paper's model frees several GiB of temporaries per step at batch 32: a trim threshold
    # below that returned them to the kernel after each step and faulted them in again.
    (threshold,) = [
        int(setting.split("=")[1])
        for setting in allocator.TUNABLES.split(":")
        if setting.startswith("glibc.malloc.trim_threshold=")
    ]
    assert threshold >= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@glibc_only
@pytest.mark.parametrize(
    ("environment", "restarts"),
    [
        ({"JAX_PLATFORMS": "cpu"}, True),
        ({"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": ""}, False),
        ({"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, False),
        ({"JAX_PLATFORMS": "cuda"}, False),
        ({"JAX_PLATFORMS": "tpu,cpu"}, False),
    ],
)
def test_restarts_only_on_cpu_where_tunables_are_not_set(monkeypatch, environment, restarts):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert allocator.should_restart() is restarts


# Runs a training command as __main__ with os.execve replaced by a report of the heavy packages
# imported at the moment of the restart; the step after the restart's place ends it otherwise.
_AT_RESTART = """
import os, runpy, sys
from emohrnet_jax import cli
def report(*args):
    print(sorted({m.split(".")[0] for m in sys.modules} & {"jax", "tensorflow", "flax"}))
    sys.exit(0)
def no_restart():
    print("no restart")
    sys.exit(0)
os.execve, cli.quiet_console = report, no_restart
sys.argv = sys.argv[1:]
if sys.argv[0].endswith(".py"):
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    runpy.run_module(sys.argv[0], run_name="__main__")
"""


@glibc_only
@pytest.mark.parametrize(
    ("command", "printed"),
    [
        (["emohrnet_jax.main"], "[]"),
        (["emohrnet_jax.main", "--nomalloc_tunables"], "no restart"),
        (["tools/cross_validate.py"], "[]"),
        (["tools/cross_validate.py", "--nomalloc_tunables"], "no restart"),
    ],
)
def test_training_restarts_before_importing_jax_unless_told_not_to(tmp_path, command, printed):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    flags = [f"--config={helpers.CONFIGS / 'demo.py'}", f"--workdir={tmp_path}"]
    result = subprocess.run(
        [sys.executable, "-c", _AT_RESTART, *command, *flags],
        cwd=helpers.CONFIGS.parent,
        env={**env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == printed
    if printed == "[]":
        assert "restarting with GLIBC_TUNABLES=" in result.stderr
