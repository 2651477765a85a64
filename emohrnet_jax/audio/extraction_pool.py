"""The worker processes of feature extraction, as the dataset builders and the benchmark use them.

Each worker is limited to one BLAS/OpenMP thread: librosa's matmuls would otherwise start as many
threads per worker as there are cores, and on a machine whose cores the workers already fill the
oversubscribed threads make more workers slower than one (docs/performance.md).
"""

import concurrent.futures
import multiprocessing
import os
import threading
import time

import threadpoolctl


def pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """`workers` spawned processes (not forked: a parent may have TensorFlow's thread pools
    running), each single-threaded, each exiting when this process is gone."""
    return concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_up_worker,
        initargs=(os.getpid(),),
    )


def _set_up_worker(parent: int) -> None:
    # Also for the libraries the first task loads: the limit is kept as a process-wide setting.
    import numpy  # noqa: F401
    import scipy.fft  # noqa: F401

    threadpoolctl.threadpool_limits(1)

    # A watcher thread, not prctl(PR_SET_PDEATHSIG): that fires when the spawning *thread* ends.
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
