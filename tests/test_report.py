"""Tests of the console summaries and the files of a run's results."""

import json

import numpy as np

from emohrnet_jax import metrics, report

NAMES3 = ["angry", "happy", "sad"]


def test_format_table_contains_the_numbers():
    validation = metrics.summarize(np.array([[8, 2], [1, 1]]), ["neutral", "angry"])
    test = metrics.summarize(np.array([[3, 0, 1], [2, 0, 0], [0, 0, 0]]), NAMES3)
    table = report.format_table({"validation": validation, "test": test})
    lines = table.splitlines()
    assert "UA" in lines[0] and "WA" in lines[0] and "macro-F1" in lines[0] and "N" in lines[0]
    validation_row = next(line for line in lines if line.startswith("validation"))
    assert validation_row.split()[1:] == ["65.00", "75.00", "62.11", "12"]
    test_row = next(line for line in lines if line.startswith("test "))
    assert test_row.split()[1:] == ["37.50", "50.00", "33.33", "6"]
    assert any("angry" in line and "75.00" in line for line in lines)
    assert any("sad" in line and "n/a" in line for line in lines)


def test_format_table_and_evaluation_show_the_ua_interval():
    test = metrics.summarize(np.array([[3, 0, 1], [2, 0, 0], [0, 0, 0]]), NAMES3)
    test |= {
        "ci95": {"ua": [0.25, 0.5], "wa": [0.3, 0.6], "macro_f1": [0.2, 0.4]},
        "worst_speaker": {"speaker": "spk03", "ua": 0.125},
        "ece": 0.1,
        "brier": 0.75,
    }
    row = next(line for line in report.format_table({"test": test}).splitlines() if "test " in line)
    assert row.split()[1:] == ["37.50", "50.00", "33.33", "6", "[25.00,", "50.00]"]
    lines = report.format_evaluation("test", test).splitlines()
    assert lines[1] == (
        "  UA 95% CI [25.00, 50.00]  worst speaker spk03 UA 0.1250  ECE 0.1000  Brier 0.7500"
    )


def test_format_table_with_a_split_missing():
    test = metrics.summarize(np.array([[1, 0], [0, 1]]), ["a", "b"])
    table = report.format_table({"test": test})
    assert "validation" not in table and "100.00" in table
    table = report.format_table({"validation": test})
    assert "test" not in table and "recall" not in table
    assert report.format_table({}) == "no results"


def test_format_evaluation_lists_recalls_and_what_was_left_out():
    result = metrics.summarize(np.array([[3, 1], [0, 0]]), ["neutral", "angry"])
    lines = report.format_evaluation("test", result).splitlines()
    assert lines[0] == "test: UA 0.7500  WA 0.7500  macro-F1 0.8571  N 4"
    assert lines[1:] == ["  neutral      recall 0.7500", "  angry        recall n/a"]
    result["left_out"] = {"calm": 2}
    text = report.format_evaluation("emovo_all", result)
    assert text.endswith("left out (not in the label map): {'calm': 2}")
    result["left_out"] = {"calm": 0}
    assert "left out" not in report.format_evaluation("emovo_all", result)


def test_write_results_and_evaluation_files(tmp_path):
    test = metrics.summarize(np.array([[2, 1], [0, 3]]), ["a", "b"])
    results = {"class_names": ["a", "b"], "validation": test, "test": test}
    history = [{"epoch": 1, "train_loss": 1.0, "validation_loss": 1.1, "validation_ua": 0.5}]
    report.write_results(str(tmp_path), results, history, title="t")
    report.write_evaluation(str(tmp_path), "test", test)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "confusion_matrix.png",
        "curves.png",
        "evaluation_test.json",
        "evaluation_test.png",
        "results.json",
    ]
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert json.loads((tmp_path / "evaluation_test.json").read_text()) == test


def test_format_table_says_how_and_on_what_protocol_a_run_was_scored():
    test = metrics.summarize(np.array([[1, 0], [0, 1]]), ["a", "b"]) | {
        "windows": 5,
        "ece": 0.0312,
        "brier": 0.25,
    }
    results = {
        "test": test,
        "evaluation": "utterance",
        "protocol": "random",
        "speaker_independent": False,
        "text_overlap": {"unit": "sentence", "test_utterances": 2, "of": 2},
        "temperature": 0.8,
    }
    lines = report.format_table(results).splitlines()
    assert "scored on whole utterances (5 test windows)" in lines
    assert (
        "protocol random: SPEAKER-DEPENDENT split, not comparable with speaker-independent results"
    ) in lines
    overlap = "text overlap: 2 of 2 test utterances share a sentence with a training utterance"
    assert overlap in lines
    assert "test calibration: ECE 0.031, Brier 0.250 at temperature 0.8" in lines
    speaker = report.format_table(results | {"protocol": "speaker", "speaker_independent": True})
    assert "protocol speaker: speaker-independent" in speaker.splitlines()
    centre = report.format_table(results | {"evaluation": "centre_crop"})
    assert "scored on centre crops (5 test windows)" in centre.splitlines()
