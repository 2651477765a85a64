"""compilation_cache.seconds_since_process_start: what training's first-step log line reports."""

import subprocess
import sys
import time

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
