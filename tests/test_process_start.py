"""compilation_cache: the clock of training's first-step log line, and what the cache keeps."""

import os
import re
import subprocess
import sys
import time

import jax
import pytest

from emohrnet_jax import compilation_cache


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read from /proc")
def test_counts_from_the_process_start_imports_included():
    # A child that waits 1 s before importing: the figure includes that second and the import.
    code = (
        "import time; time.sleep(1.0)\n"
        "from emohrnet_jax import compilation_cache\n"
        "print(compilation_cache.seconds_since_process_start())"
    )
    started = time.perf_counter()
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    elapsed = time.perf_counter() - started
    seconds = float(result.stdout.split()[-1])
    assert 1.0 <= seconds <= elapsed + 0.05
    # And in this process, which started before this test: more than the test has taken so far.
    assert compilation_cache.seconds_since_process_start() > time.perf_counter() - started


_CACHE_SETTINGS = (
    "import jax, sys\n"
    "from emohrnet_jax import compilation_cache\n"
    "compilation_cache.enable(sys.argv[1])\n"
    "config = jax.config\n"
    "print(config.jax_compilation_cache_dir, config.jax_persistent_cache_min_compile_time_secs)"
)


@pytest.mark.parametrize("environment, minimum", [({}, "0.0"), ({"MIN": "2.5"}, "2.5")])
def test_the_cache_keeps_every_program_unless_told_otherwise(tmp_path, environment, minimum):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"}
    if environment:
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = environment["MIN"]
    command = [sys.executable, "-c", _CACHE_SETTINGS, str(tmp_path)]
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, env=env, timeout=120
    )
    assert result.stdout.split() == [str(tmp_path), minimum]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read from /proc")
def test_the_log_line_says_what_is_done_and_when(monkeypatch):
    # absl's own call captured: other tests may have changed absl's handlers and verbosity.
    lines = []
    monkeypatch.setattr(compilation_cache.logging, "info", lambda *args: lines.append(args))
    compilation_cache.log_time_since_start("First train step", jax.numpy.zeros(2))
    ((template, *values),) = lines
    message = template % tuple(values)
    assert re.fullmatch(r"First train step done \d+\.\d s after the process started", message)
