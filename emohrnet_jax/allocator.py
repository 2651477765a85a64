"""glibc malloc settings under which XLA's CPU runtime reuses memory between steps.

XLA on CPU allocates a step's temporary buffers (454 MB for `w18_small_v2` at batch 8) from its
worker threads and frees them when the step ends. glibc serves blocks that large with a fresh
`mmap` and unmaps them on `free`, so every step page-faults its whole working set in again: 437
MiB and about 0.35 s of kernel time per step there. `TUNABLES` keep freed memory in one heap for
the next step and back it with transparent huge pages (train step 0.88x the time,
docs/performance.md). glibc reads tunables only when a process starts, so the entry points restart
themselves once with them set (`restart_with_tunables`). Set `GLIBC_TUNABLES` yourself
(`GLIBC_TUNABLES=` to keep glibc's defaults) and it is left as it is.
"""

import importlib.metadata
import importlib.util
import os
import platform
import sys

TUNABLES = ":".join(
    [
        # One arena for every thread: a block freed by a worker thread stays reusable (other
        # arenas are at most 64 MiB and hand larger blocks to mmap whatever the settings).
        "glibc.malloc.arena_max=1",
        "glibc.malloc.mmap_max=0",
        # Keep up to 2 GiB freed at the top of the heap instead of returning it to the kernel.
        "glibc.malloc.trim_threshold=2147483648",
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

    Call it from a script's `__main__` guard before JAX starts, best before TensorFlow and JAX are
    imported (whatever was imported is imported again). Restarts only on Linux with glibc, on the
    CPU backend, and where `GLIBC_TUNABLES` is not set (the restarted process has it set, so this
    happens once). Does not return when it restarts.
    """
    if not should_restart():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {**os.environ, "GLIBC_TUNABLES": TUNABLES},
    )
