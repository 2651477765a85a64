"""glibc malloc settings under which XLA's CPU runtime reuses memory between steps.

XLA on CPU allocates a step's large temporary buffers from its worker threads and frees them
when the step ends. glibc serves blocks that large with a fresh
`mmap` and unmaps them on `free`, so every step page-faults its whole working set in again.
`TUNABLES` keep freed memory in one heap for the next step and back it with transparent huge
pages (the train-step figures are in the performance docs). glibc reads tunables only when a
process starts, so the training commands restart themselves once, visibly, with them set
(`restart_with_tunables`, from their `--malloc_tunables` flag); nothing here runs on import.
"""

import importlib.metadata
import importlib.util
import os
import platform
import sys

from absl import logging

TUNABLES = ":".join(
    [
        # One arena for every thread: a block freed by a worker thread stays reusable (other
        # arenas are at most 64 MiB and hand larger blocks to mmap whatever the settings).
        "glibc.malloc.arena_max=1",
        "glibc.malloc.mmap_max=0",
        # Never return freed memory at the top of the heap to the kernel: the paper's model at
        # batch 32 frees 5.5 GiB of temporaries per step, which a 2 GiB threshold gave back and
        # faulted in again every step.
        "glibc.malloc.trim_threshold=1099511627776",
        "glibc.malloc.top_pad=536870912",
        # madvise(MADV_HUGEPAGE) on the heap: 2 MiB pages, far fewer TLB misses and faults.
        "glibc.malloc.hugetlb=1",
    ]
)


def _runs_on_cpu() -> bool:
    """False where JAX will use an accelerator (named in JAX_PLATFORMS, or a plugin installed)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    plugins = importlib.metadata.entry_points(group="jax_plugins")
    return not plugins and not any(importlib.util.find_spec(m) for m in ("jax_plugins", "libtpu"))


def should_restart() -> bool:
    """Whether `restart_with_tunables` would re-execute this process."""
    return (
        sys.platform == "linux"
        and platform.libc_ver()[0] == "glibc"
        and "GLIBC_TUNABLES" not in os.environ
        and _runs_on_cpu()
    )


def restart_with_tunables() -> None:
    """Re-executes this program (same interpreter and arguments) with `TUNABLES`, when it helps.

    Call it from a command's `main`, before JAX starts and best before TensorFlow is imported.
    Restarts only on Linux with glibc, on the CPU backend, and where `GLIBC_TUNABLES` is not set
    (the restarted process has it set, so this happens once). Does not return when it restarts.
    """
    if not should_restart():
        return
    logging.info("restarting with GLIBC_TUNABLES=%s (--nomalloc_tunables: off)", TUNABLES)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {**os.environ, "GLIBC_TUNABLES": TUNABLES},
    )
