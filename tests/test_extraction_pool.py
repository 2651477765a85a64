"""Feature-extraction workers: one BLAS thread each, and gone with the process that started them."""

import threadpoolctl

from emohrnet_jax.audio import extraction_pool


def _blas_threads() -> list[int]:
    import numpy  # noqa: F401  (loads the BLAS whose threads are counted)

    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]


def test_workers_run_one_blas_thread_each():
    with extraction_pool.pool(2) as pool:
        counts = [pool.submit(_blas_threads).result(timeout=60) for _ in range(4)]
    assert all(counts) and all(set(c) == {1} for c in counts), counts
