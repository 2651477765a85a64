"""A build on Apache Beam (DirectRunner, 2 worker processes) equals the default build."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from emohrnet_jax.audio import features
from emohrnet_jax.data import beam_build, builders, sources
from tests import helpers

HAS_BEAM = importlib.util.find_spec("apache_beam") is not None
needs_beam = pytest.mark.skipif(
    not HAS_BEAM, reason="apache-beam is not installed (pip install -e '.[beam]')"
)

PARAMS = features.FeatureParams(n_mels=32, n_fft=512, hop_length=256)
DIRECT = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"


def _wav(path, seconds=0.5, frequency=220.0, rate=16000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * frequency * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)


def _ravdess_tree(root):
    """Two actors with 4 emotions each, and a third actor's bad and converted files."""
    for actor in (1, 2):
        for emotion in range(1, 5):
            name = f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav"
            _wav(root / f"Actor_{actor:02d}" / name, frequency=100 + 40 * emotion + actor)
    bad = root / "Actor_03"
    bad.mkdir()
    (bad / "03-01-01-01-01-01-03.wav").write_bytes(b"RIFF\x00\x00garbage-not-a-wav")  # corrupt
    (bad / "03-01-02-01-01-01-03.wav").write_bytes(b"")  # zero length
    _wav(bad / "03-01-03-01-01-01-03.wav", seconds=0.1)  # shorter than min_seconds
    _wav(bad / "03-01-05-01-01-01-03.wav", rate=48000, channels=2)  # kept, converted
    _wav(bad / "03-02-05-01-01-01-03.wav")  # song: excluded by the protocol


def _examples(data_dir):
    builder = tfds.builder(
        "ravdess", data_dir=str(data_dir), config=builders.make_config("ravdess", PARAMS)
    )
    stored = tfds.as_numpy(builder.as_dataset(split=builders.SPLIT))
    examples = {e["id"].decode(): {name: _comparable(v) for name, v in e.items()} for e in stored}
    return examples, builder


def _comparable(value):
    if isinstance(value, np.ndarray):  # The mel, by its bytes.
        return value.dtype.str, value.shape, value.tobytes()
    return value


@needs_beam
@pytest.mark.slow
def test_a_directrunner_build_holds_the_default_builds_examples_and_summary(tmp_path):
    raw = tmp_path / "raw"
    _ravdess_tree(raw)
    default = builders.prepare(
        "ravdess", str(tmp_path / "default"), str(raw), feature_params=PARAMS, num_workers=0
    )
    on_beam = builders.prepare(
        "ravdess",
        str(tmp_path / "beam"),
        str(raw),
        feature_params=PARAMS,
        beam_options=beam_build.pipeline_options(DIRECT),
    )
    assert on_beam.pop("data_dir") != default.pop("data_dir")
    assert on_beam == default
    assert default["kept"] == 9 and default["skipped"] == {
        "cannot decode audio": 2,
        "shorter than 0.25 s": 1,
    }
    expected, default_builder = _examples(tmp_path / "default")
    examples, beam_builder = _examples(tmp_path / "beam")
    assert len(examples) == 9 and examples == expected  # ids, labels, mel bytes, ...
    assert beam_builder.info.metadata == default_builder.info.metadata  # fingerprint included
    assert beam_builder.info.metadata[sources.METADATA_KEY]
    assert sorted(os.listdir(beam_builder.data_dir)) == sorted(os.listdir(default_builder.data_dir))
    # Unchanged sources: the Beam build is kept, as a default build would be.
    again = builders.prepare(
        "ravdess",
        str(tmp_path / "beam"),
        str(raw),
        feature_params=PARAMS,
        beam_options=beam_build.pipeline_options(DIRECT),
    )
    assert "rebuilt" not in again and again["kept"] == 9


@needs_beam
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runner=DirectRunner,bogus=3", "unknown Beam pipeline option(s) ['bogus']"),
        ("runner", "argument --runner: expected one argument"),
        ("direct_num_workers=two", "invalid int value: 'two'"),
        ("runner=DirectRunner,,direct_num_workers=2", "malformed Beam pipeline option(s) ['']"),
        ("--runner=DirectRunner", "malformed Beam pipeline option(s) ['--runner=DirectRunner']"),
    ],
)
def test_unknown_or_malformed_pipeline_options_are_refused(text, message):
    with pytest.raises(ValueError, match="Beam pipeline option") as error:
        beam_build.pipeline_options(text)
    assert message in str(error.value)


@needs_beam
def test_switches_and_values_are_read_in_tfds_builds_format():
    options = beam_build.pipeline_options(DIRECT + ",save_main_session")
    assert options.get_all_options(drop_default=True) == {
        "runner": "DirectRunner",
        "direct_num_workers": 2,
        "direct_running_mode": "multi_processing",
        "save_main_session": True,
    }


def _tool_error(data_dir, *flags) -> str:
    """The one line of stderr of a prepare_data that fails, having built nothing."""
    tool = str(helpers.CONFIGS.parent / "tools" / "prepare_data.py")
    args = [sys.executable, tool, "--dataset=synthetic", f"--data_dir={data_dir}", *flags]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert not os.listdir(data_dir)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


@needs_beam
@pytest.mark.slow
def test_the_tool_refuses_unknown_options_in_one_line(tmp_path):
    line = _tool_error(tmp_path, "--beam_pipeline_options=runner=DirectRunner,direct_workers=2")
    assert "unknown Beam pipeline option(s) ['direct_workers']" in line


@pytest.mark.slow
def test_the_tool_refuses_num_workers_for_a_beam_build(tmp_path):
    line = _tool_error(tmp_path, "--beam_pipeline_options=runner=DirectRunner", "--num_workers=2")
    assert "--num_workers is for the default build" in line


@needs_beam
def test_a_beam_build_that_keeps_nothing_says_why(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF\x00\x00garbage-not-a-wav")
    (tmp_path / "b.wav").write_bytes(b"")
    (tmp_path / "clips.csv").write_text("path,label,speaker\na.wav,calm,s1\nb.wav,calm,s2\n")
    with pytest.raises(ValueError, match=r"no usable audio in labelled_folder: \{'cannot decode"):
        builders.prepare(
            "labelled_folder",
            str(tmp_path / "tfds"),
            feature_params=PARAMS,
            beam_options=beam_build.pipeline_options("runner=DirectRunner"),
            csv_path=str(tmp_path / "clips.csv"),
        )


@pytest.mark.skipif(HAS_BEAM, reason="apache-beam is installed")
def test_without_apache_beam_the_options_say_which_extra_to_install():
    with pytest.raises(ImportError, match=r"pip install 'emohrnet-jax\[beam\]'"):
        beam_build.pipeline_options("runner=DirectRunner")
