"""Tests of what the commands share (emohrnet_jax.cli) and of loading configs by path."""

import ast
import logging
import os
import subprocess
import sys

import pytest

from emohrnet_jax import cli
from emohrnet_jax.data import builders
from tests import helpers

REPO = helpers.CONFIGS.parent

# Loads a config file by path, as `--config=` does, and prints two of its fields.
_LOAD = """
import sys
from absl import flags
from ml_collections import config_flags
config = config_flags.DEFINE_config_file("config")
flags.FLAGS(["load", f"--config={sys.argv[1]}"])
print(config.value.data.dataset, config.value.model.num_classes)
"""


@pytest.mark.parametrize(("name", "expected"), [("demo", "synthetic 4"), ("ravdess", "ravdess 8")])
def test_configs_load_by_path_from_another_working_directory(tmp_path, name, expected):
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, str(helpers.CONFIGS / f"{name}.py")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def _record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_the_quiet_console_keeps_the_project_lines_and_every_error():
    package = str(REPO / "emohrnet_jax" / "train.py")
    tool = str(REPO / "tools" / "prepare_data.py")
    library = os.path.join(os.path.dirname(logging.__file__), "orbax", "checkpoint.py")
    assert cli._project_info(_record(package, logging.INFO))
    assert cli._project_info(_record(tool, logging.INFO))
    assert not cli._project_info(_record(library, logging.INFO))
    assert not cli._project_info(_record(library, logging.WARNING))
    assert cli._project_info(_record(library, logging.ERROR))


def test_native_start_up_lines_are_hidden_and_the_rest_is_kept(capfd):
    noise = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796160705.529602   16474 port.cc:153] oneDNN custom operations are on.\n"
    )
    with cli.quiet_imports():
        os.write(2, noise + b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_prepare_data_lists_every_builder():
    # tools/prepare_data.py names them without importing the builders (TensorFlow).
    tree = ast.parse((REPO / "tools" / "prepare_data.py").read_text())
    (datasets,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "DATASETS"
    ]
    assert datasets == tuple(sorted(builders.BUILDERS))
