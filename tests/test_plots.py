"""Tests of the pictures: confusion matrix and training curves as PNG files."""

import os
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from emohrnet_jax import plots, storage

NAMES3 = ["angry", "happy", "sad"]


def _assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert 5_000 < len(data) < 2_000_000
    leftovers = [name for name in os.listdir(os.path.dirname(path)) if ".tmp" in name]
    assert not leftovers


def test_plot_confusion_matrix_writes_png(tmp_path):
    path = str(tmp_path / "cm.png")
    # An absent class (an all-zero row) must not divide by zero.
    confusion = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        plots.plot_confusion_matrix(confusion, NAMES3, path, title="test")
    _assert_png(path)


def test_plot_confusion_matrix_replaces_an_existing_file(tmp_path):
    path = tmp_path / "cm.png"
    path.write_bytes(b"old")
    plots.plot_confusion_matrix(np.array([[1, 0], [0, 1]]), ["a", "b"], str(path))
    _assert_png(str(path))


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_curves([{"epoch": 1, "train_loss": 1.0}], str(tmp_path / "curves.png"))
    assert os.listdir(tmp_path) == []


def test_plot_curves_writes_png_with_missing_keys(tmp_path):
    path = str(tmp_path / "curves.png")
    history = [
        {"epoch": 1, "train_loss": 1.6, "train_ua": 0.30},
        {"epoch": 2, "train_loss": 1.2, "validation_loss": 1.3, "validation_ua": 0.45},
        {"epoch": 3, "train_loss": 1.0, "train_ua": 0.55},
        {"epoch": 4, "train_loss": 0.9, "validation_loss": 1.2, "validation_ua": 0.52},
        {"epoch": 5, "train_loss": np.float32(0.8), "validation_ua": jnp.float32(0.50)},
    ]
    plots.plot_curves(history, path)
    _assert_png(path)


def test_plot_curves_with_empty_history(tmp_path):
    path = str(tmp_path / "curves.png")
    plots.plot_curves([], path)
    _assert_png(path)
