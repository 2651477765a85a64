"""A whole job in a Cloud Storage bucket, against a real GCS API server on 127.0.0.1 (issue 17).

Prepare the tiny synthetic corpus into gs://.../tfds, train with --workdir=gs://.../run, stop it
with SIGTERM, resume it to the end (the results equal an uninterrupted local run's on the same
data), then predict with and export the run in the bucket.
"""

import signal
import subprocess
import sys
import time

import pytest

from emohrnet_jax import export, predict, storage, train
from tests import helpers

pytestmark = pytest.mark.slow

_ROOT = str(helpers.CONFIGS.parent)
_TIMEOUT_S = 300


def _command(*args: str) -> list[str]:
    return [sys.executable, *args]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), capture_output=True, text=True, timeout=_TIMEOUT_S, cwd=_ROOT
    )


def _prepare(data_dir: str) -> subprocess.CompletedProcess:
    corpus = [
        f
        for f in helpers.tiny_flags(data_dir)
        if f.split("=")[0].split(".")[-1]
        in ("--config", "n_mels", "n_fft", "synthetic_speakers", "synthetic_utterances_per_speaker")
    ]
    return _run("tools/prepare_data.py", "--dataset=synthetic", *corpus, f"--data_dir={data_dir}")


def test_prepare_train_preempt_resume_in_a_bucket(gcs, tmp_path):
    data_dir, workdir = f"{gcs}/tfds", f"{gcs}/run"
    prepared = _prepare(data_dir)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert f"in {data_dir}/synthetic/" in prepared.stdout
    build = storage.path(data_dir) / "synthetic"
    assert any(build.glob("*/*/dataset_info.json"))

    # Epochs of 4 steps; 30 epochs leave ample time to stop it after the first checkpoint.
    flags = [*helpers.tiny_flags(data_dir), f"--workdir={workdir}"]
    process = subprocess.Popen(
        _command("-m", "emohrnet_jax.main", *flags, "--config.num_epochs=30"),
        stderr=subprocess.PIPE,
        text=True,
        cwd=_ROOT,
    )
    deadline = time.time() + _TIMEOUT_S
    while not storage.exists(f"{workdir}/checkpoints/4/commit_success.txt"):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint in the bucket in time"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=_TIMEOUT_S)[1]
    assert process.returncode == train.EXIT_PREEMPTED == 75, stderr[-3000:]  # EX_TEMPFAIL
    assert "Preempted: saved step" in stderr
    assert not storage.exists(f"{workdir}/results.json")
    assert not storage.exists(f"{workdir}/.lock")  # the lease is released on the way out

    resumed = _run("-m", "emohrnet_jax.main", *flags)  # num_epochs=2: may change on a resume
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from step" in resumed.stderr
    results = storage.read_json(f"{workdir}/results.json")
    for name in ("config.json", "splits.json", "confusion_matrix.png", "curves.png"):
        assert storage.exists(f"{workdir}/{name}"), name
    assert any(storage.path(workdir).glob("events.out.tfevents.*"))

    # Served from the bucket: the best state of the run that was trained there.
    predictor = predict.Predictor(workdir)
    assert predictor.best["epoch"] == results["best_epoch"]
    info = export.export_run(workdir, f"{gcs}/export", ["jax"], ["cpu"])
    assert storage.read_json(f"{gcs}/export/metadata.json") == info

    # In this process, from the same bucket: its steps are compiled already (the shared cache).
    expected = train.train_and_evaluate(helpers.tiny_config(data_dir), str(tmp_path))
    assert results["best_epoch"] == expected["best_epoch"]
    for split in ("validation", "test"):
        assert results[split]["confusion_matrix"] == expected[split]["confusion_matrix"]
        assert results[split]["loss"] == pytest.approx(expected[split]["loss"], rel=1e-4)


def test_a_missing_bucket_is_one_line_within_seconds(gcs, tmp_path):
    start = time.monotonic()
    result = _run(
        "-m", "emohrnet_jax.main", *helpers.tiny_flags(tmp_path), "--workdir=gs://no-bucket/run"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --workdir=gs://no-bucket/run: bucket gs://no-bucket does not exist"
    )
    assert time.monotonic() - start < 15  # before TensorFlow and JAX are imported
    prepared = _prepare("gs://no-bucket/tfds")
    assert prepared.returncode == 1
    assert (
        prepared.stderr.strip()
        .splitlines()[-1]
        .endswith("--data_dir=gs://no-bucket/tfds: bucket gs://no-bucket does not exist")
    )


def test_training_from_a_bucket_without_the_build_says_how_to_prepare_it(gcs, tmp_path):
    flags = [
        *helpers.tiny_flags(f"{gcs}/tfds"),
        f"--workdir={tmp_path}",
        "--config.data.dataset=ravdess",
    ]
    result = _run("-m", "emohrnet_jax.main", *flags)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"ravdess with these features is not prepared in {gcs}/tfds" in line
    assert f"--data_dir={gcs}/tfds" in line
