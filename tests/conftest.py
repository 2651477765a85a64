"""Test session set-up, before JAX initializes: eight fake CPU devices and a compilation cache.

Eight devices make sharded code run as on a multi-device host. XLA's CPU compiler needs ~25 s per
train step program here, so every test, subprocess and pytest-xdist worker of this session shares
one persistent compilation cache (a fresh folder per session, so CI stays hermetic) and compiles
with LLVM's optimizations off (~35% less compile time for the tiny test models, whose steps take
milliseconds).
"""

import os
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="emohrnet_jax_test_xla_cache_")
)
# A size limit turns on JAX's file lock around cache reads and writes, which pytest-xdist's workers
# share: without it, one could read an entry another is still writing. 64 GiB: never evicted.
os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(64 * 2**30)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


@pytest.fixture(scope="session", autouse=True)
def _whole_array_checkpoints():
    """Saves each replicated array once: orbax otherwise writes it as 8 slices, one per fake device.

    The fake devices share host memory, so the slices only add work (~2 s per tiny-model save).
    """
    import jax
    import orbax.checkpoint as ocp

    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory):
    """A tiny run folder (config.json, best and latest checkpoints) shared by serving tests."""
    from tests import saved_run as module  # After the environment above is set.

    return module.make(str(tmp_path_factory.mktemp("saved_run")))


@pytest.fixture(scope="session")
def gcs_server():
    """A Cloud Storage emulator on 127.0.0.1 for the session; STORAGE_EMULATOR_HOST points at it.

    Subprocesses inherit the variable; each test keeps to its own prefix (the `gcs` fixture).
    """
    from tests import gcs_emulator

    with gcs_emulator.serve() as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url
        try:
            yield url
        finally:
            del os.environ["STORAGE_EMULATOR_HOST"]


@pytest.fixture
def gcs(gcs_server, tmp_path, monkeypatch, request):
    """A gs:// prefix of the test's own in the emulator's bucket, and a local cache of its own."""
    from tests import gcs_emulator

    monkeypatch.setenv("EMOHRNET_JAX_CACHE", str(tmp_path / "cache"))
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")
    return f"gs://{gcs_emulator.BUCKET}/{name}"
