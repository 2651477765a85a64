"""Tests that a build follows what it was built from: edited CSVs, changed audio, odd file names."""

import functools
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from emohrnet_jax import locks, paths
from emohrnet_jax.audio import features
from emohrnet_jax.data import builders, loading
from tests import helpers

PARAMS = features.FeatureParams(n_mels=32, n_fft=512, hop_length=256)
NOT_UTF8 = "file name not valid UTF-8"  # the reason counted in prepare_summary.json


def _tone(seconds=0.4, frequency=220.0, rate=16000):
    return 0.3 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)


def _wav(path, seconds=0.4, frequency=220.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, _tone(seconds, frequency), 16000, subtype="PCM_16")
    return path


def _labelled(folder, rows, name="clips.csv"):
    """A CSV of (file, label, speaker) rows beside its clips (written when missing)."""
    for file, _, _ in rows:
        if not (folder / file).exists():
            _wav(folder / file, frequency=150 + 10 * len(file))
    lines = ["path,label,speaker", *(",".join(row) for row in rows)]
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder / name


def _data_config(data_dir, csv_path, class_names):
    data = helpers.load_config("default").data
    data.dataset, data.data_dir, data.csv = "labelled_folder", str(data_dir), str(csv_path)
    data.class_names = tuple(class_names)
    data.n_mels, data.n_fft, data.hop_length = PARAMS.n_mels, PARAMS.n_fft, PARAMS.hop_length
    return data


def _labels(builder):
    names = builder.info.features["label"].names
    dataset = builder.as_dataset(split=builders.SPLIT, decoders={"mel": tfds.decode.SkipDecoding()})
    return {e["id"].decode(): names[e["label"]] for e in tfds.as_numpy(dataset)}


def _prepare_labelled(data_dir, csv_path, **options):
    return builders.prepare(
        "labelled_folder",
        str(data_dir),
        feature_params=PARAMS,
        num_workers=0,
        csv_path=str(csv_path),
        **options,
    )


def test_an_edited_csv_is_refused_by_training_then_rebuilt_with_its_new_labels(tmp_path):
    rows = [("a.wav", "calm", "s1"), ("b.wav", "tense", "s1"), ("c.wav", "calm", "s2")]
    csv_path = _labelled(tmp_path / "corpus", rows)
    data_dir = tmp_path / "tfds"
    assert _prepare_labelled(data_dir, csv_path)["kept"] == 3
    assert "rebuilt" not in _prepare_labelled(data_dir, csv_path)  # unchanged: kept as it is
    data = _data_config(data_dir, csv_path, ("calm", "tense"))
    assert _labels(loading.load_builder(data)) == {"a": "calm", "b": "tense", "c": "calm"}

    rows[2] = ("c.wav", "tense", "s2")  # a label fixed
    rows.append(("d.wav", "calm", "s2"))  # a row added
    _labelled(tmp_path / "corpus", rows)
    with pytest.raises(ValueError, match=r"clips.csv changed since it was prepared") as error:
        loading.load_builder(data)
    message = str(error.value)
    assert "1 file added, 1 file relabelled" in message and "\n" not in message
    assert f"re-run python tools/prepare_data.py --dataset=labelled_folder --csv={csv_path}" in (
        message
    )

    summary = _prepare_labelled(data_dir, csv_path)
    assert summary["kept"] == 4
    assert "1 file added, 1 file relabelled, clips.csv edited" in summary["rebuilt"]
    assert _labels(loading.load_builder(data)) == {
        "a": "calm",
        "b": "tense",
        "c": "tense",
        "d": "calm",
    }


def test_two_csvs_in_one_data_dir_are_two_builds(tmp_path):
    first = _labelled(tmp_path / "one", [("a.wav", "x", "s1"), ("b.wav", "y", "s2")])
    second = _labelled(tmp_path / "two", [("c.wav", "y", "s1"), ("d.wav", "z", "s2")])
    data_dir = tmp_path / "tfds"
    built = [_prepare_labelled(data_dir, csv) for csv in (first, second)]
    assert built[0]["data_dir"] != built[1]["data_dir"]
    assert _labels(loading.load_builder(_data_config(data_dir, first, "xy"))) == {
        "a": "x",
        "b": "y",
    }
    # A relative spelling of the same CSV finds the same build.
    os.chdir(tmp_path)
    assert _labels(loading.load_builder(_data_config(data_dir, "two/clips.csv", "yz"))) == {
        "c": "y",
        "d": "z",
    }


def test_training_on_a_labelled_folder_needs_its_csv(tmp_path):
    data = _data_config(tmp_path, "unused.csv", ("calm",))
    data.csv = None
    with pytest.raises(ValueError, match=r"config.data.csv is not set"):
        loading.load_builder(data)
    data.csv = str(tmp_path / "never_prepared.csv")
    with pytest.raises(FileNotFoundError, match=r"--csv=.*never_prepared.csv --data_dir="):
        loading.load_builder(data)
    data.data_dir = "s3://bucket/tfds"
    with pytest.raises(paths.PathError, match=r"config.data.data_dir=s3://"):
        loading.load_builder(data)


def _emovo_tree(root):
    for name, frequency in (("dis-f1-b1", 200), ("gio-f1-b1", 260), ("neu-m1-b1", 320)):
        _wav(root / "f1" / f"{name}.wav", frequency=frequency)
    return root


prepare_emovo = functools.partial(builders.prepare, "emovo", feature_params=PARAMS, num_workers=0)


def test_a_replaced_audio_file_of_a_manual_corpus_is_rebuilt(tmp_path):
    raw, data_dir = _emovo_tree(tmp_path / "raw"), str(tmp_path / "tfds")
    assert prepare_emovo(data_dir, str(raw))["kept"] == 3
    assert "rebuilt" not in prepare_emovo(data_dir, str(raw))
    _wav(raw / "f1" / "gio-f1-b1.wav", seconds=0.8)  # a longer take in place of the old one
    summary = prepare_emovo(data_dir, str(raw))
    assert (
        summary["rebuilt"]
        == "the sources changed since it was prepared (1 file changed (size or time))"
    )
    builder = tfds.builder("emovo", data_dir=data_dir, config=builders.make_config("emovo", PARAMS))
    durations = {
        e["id"].decode(): e["duration"]
        for e in tfds.as_numpy(builder.as_dataset(split="utterances"))
    }
    assert durations["gio-f1-b1"] == pytest.approx(0.8, abs=1e-3)


def test_a_build_without_a_fingerprint_is_rebuilt_and_a_failed_rebuild_keeps_the_old_one(tmp_path):
    raw, data_dir = _emovo_tree(tmp_path / "raw"), str(tmp_path / "tfds")
    build = prepare_emovo(data_dir, str(raw))["data_dir"]
    # As made before this change: no fingerprint in the metadata, no sources.json.
    with open(os.path.join(build, "metadata.json")) as file:
        metadata = json.load(file)
    del metadata["source_fingerprint"]
    with open(os.path.join(build, "metadata.json"), "w") as file:
        json.dump(metadata, file)
    os.remove(os.path.join(build, "sources.json"))
    summary = prepare_emovo(data_dir, str(raw))
    assert "built before source fingerprints were recorded" in summary["rebuilt"]

    for path in raw.glob("f1/*.wav"):
        path.write_bytes(b"RIFF garbage")  # every file now unreadable: the rebuild fails
    with pytest.raises(ValueError, match="no usable audio"):
        prepare_emovo(data_dir, str(raw))
    builder = tfds.builder("emovo", data_dir=data_dir, config=builders.make_config("emovo", PARAMS))
    assert len(list(builder.as_dataset(split="utterances"))) == 3
    assert not glob.glob(os.path.join(data_dir, "**", "incomplete.*"), recursive=True)


def test_a_second_prepare_of_the_same_build_is_refused(tmp_path):
    raw, data_dir = _emovo_tree(tmp_path / "raw"), tmp_path / "tfds"
    folder = data_dir / "emovo" / builders.make_config("emovo", PARAMS).name
    holder = f"in use by process {os.getpid()} "
    with (
        locks.hold(str(folder), "the build of emovo"),
        pytest.raises(locks.LockedError, match=holder),
    ):
        prepare_emovo(str(data_dir), str(raw))


def test_a_file_name_that_is_not_utf8_is_skipped_and_counted(tmp_path):
    raw = _emovo_tree(tmp_path / "raw")
    os.makedirs(os.fsencode(str(raw)) + b"/m\xff")
    wav = (raw / "f1" / "dis-f1-b1.wav").read_bytes()
    for name in (b"/m\xff/rab-m2-b1.wav", b"/f1/sor-f1-b\xff.wav"):
        with open(os.fsencode(str(raw)) + name, "wb") as file:  # soundfile refuses such names
            file.write(wav)
    summary = prepare_emovo(str(tmp_path / "tfds"), str(raw))
    assert summary["kept"] == 3
    assert summary["excluded"] == {NOT_UTF8: 2}
    shown = summary["excluded_files"][NOT_UTF8]
    assert shown == [f"{raw}/f1/sor-f1-b\\xff.wav", f"{raw}/m\\xff/rab-m2-b1.wav"]
    with open(os.path.join(summary["data_dir"], builders.SUMMARY_FILE)) as file:
        assert json.load(file)["excluded_files"][NOT_UTF8] == shown


def _prepare_data(*args, cwd, home=None):
    tool = str(helpers.CONFIGS.parent / "tools" / "prepare_data.py")
    env = {**os.environ, "HOME": str(home)} if home else None
    return subprocess.run(
        [sys.executable, tool, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


@pytest.mark.slow
def test_prepare_data_expands_home_and_refuses_urls_and_ignored_flags(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _labelled(tmp_path, [("a.wav", "x", "s1"), ("b.wav", "y", "s2")])
    ok = _prepare_data(
        "--dataset=labelled_folder",
        "--csv=~/clips.csv",
        "--data_dir=~/tfds",
        "--num_workers=0",
        cwd=cwd,
        home=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "tfds" / "labelled_folder").is_dir() and not any(cwd.iterdir())
    csv_flag = f"--csv={tmp_path / 'clips.csv'}"
    for args, message in [
        (["--dataset=synthetic", "--data_dir=s3://b/tfds"], "--data_dir=s3://b/tfds: s3://"),
        (
            ["--dataset=labelled_folder", csv_flag, f"--manual_dir={cwd}", "--data_dir=out"],
            "--manual_dir is not used by --dataset=labelled_folder",
        ),
        (["--dataset=emovo", csv_flag, f"--manual_dir={cwd}"], "--csv is for"),
    ]:
        refused = _prepare_data(*args, cwd=cwd)
        assert refused.returncode == 1
        reasons = [line for line in refused.stderr.splitlines() if line.startswith("prepare_data:")]
        assert len(reasons) == 1 and message in reasons[0]
        assert not any(cwd.iterdir())  # nothing written, no ./gs: folder


def test_an_edited_iemocap_label_file_changes_the_fingerprint(tmp_path):
    from emohrnet_jax.data import corpora, sources  # sources is new: the other tests run without

    session = tmp_path / "Session1"
    labels = session / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    labels.parent.mkdir(parents=True)
    for speaker in ("F000", "M000"):
        _wav(session / "sentences" / "wav" / "Ses01F_impro01" / f"Ses01F_impro01_{speaker}.wav")
    line = "[{0}.0 - {1}.5]\tSes01F_impro01_{2}\t{3}\t[2.5, 2.5, 2.5]\n"
    labels.write_text(line.format(0, 1, "F000", "neu") + line.format(1, 2, "M000", "ang"))
    before = sources.record(corpora.iemocap(str(tmp_path)), corpora.IEMOCAP_CLASSES["4class"])
    labels.write_text(line.format(0, 1, "F000", "neu") + line.format(1, 2, "M000", "sad"))
    after = sources.record(corpora.iemocap(str(tmp_path)), corpora.IEMOCAP_CLASSES["4class"])
    assert before["digest"] != after["digest"]
    change = sources.describe_change(before["entries"], after["entries"])
    assert change == "1 file relabelled, Ses01F_impro01.txt edited"


def test_a_build_prepared_with_skip_unknown_labels_is_the_one_training_reads(tmp_path):
    """Such a build has its own name: training finds it through config.data.skip_unknown_labels."""
    rows = [("a.wav", "happy", "s1"), ("b.wav", "sad", "s1"), ("c.wav", "other", "s2")]
    csv_path = _labelled(tmp_path, rows)
    summary = _prepare_labelled(
        tmp_path / "tfds", csv_path, class_names=("happy", "sad"), skip_unknown_labels=True
    )
    assert summary["kept"] == 2
    data = _data_config(tmp_path / "tfds", csv_path, ("happy", "sad"))
    with pytest.raises(FileNotFoundError, match="not prepared"):
        loading.load_builder(data)
    data.skip_unknown_labels = True
    assert _labels(loading.load_builder(data)) == {"a": "happy", "b": "sad"}
