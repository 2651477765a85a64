"""Shared test helpers."""

import pathlib
import runpy

import ml_collections

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load_config(name: str) -> ml_collections.ConfigDict:
    """Loads `configs/<name>.py` the way the command-line flags do, from any working directory."""
    return runpy.run_path(str(CONFIGS / f"{name}.py"))["get_config"]()
