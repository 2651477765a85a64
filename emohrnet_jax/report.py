"""What a run leaves for people: results files with their pictures, and console summaries."""

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from emohrnet_jax import plots, storage


def write_results(
    workdir: str, results: dict[str, Any], history: Sequence[dict[str, Any]], title: str
) -> None:
    """Writes a finished run's `results.json`, `confusion_matrix.png` (test; a mixture's also
    `confusion_matrix_<corpus>.png` for each corpus it tests on) and `curves.png`."""
    storage.write_json_atomically(os.path.join(workdir, "results.json"), results)
    tested = {"": results["test"]} | {
        f"_{corpus}": summary for corpus, summary in results["test"].get("per_corpus", {}).items()
    }
    for suffix, summary in tested.items():
        plots.plot_confusion_matrix(
            np.array(summary["confusion_matrix"]),
            results["class_names"],
            os.path.join(workdir, f"confusion_matrix{suffix}.png"),
            title=title + (f" ({suffix[1:]})" if suffix else ""),
        )
    plots.plot_curves(history, os.path.join(workdir, "curves.png"))


def write_evaluation(workdir: str, name: str, result: dict[str, Any]) -> None:
    """Writes `evaluation_<name>.json` and its confusion matrix, `evaluation_<name>.png`."""
    path = os.path.join(workdir, f"evaluation_{name}")
    storage.write_json_atomically(path + ".json", result)
    classes = list(result["per_class_recall"])
    plots.plot_confusion_matrix(
        np.array(result["confusion_matrix"]), classes, path + ".png", title=name
    )


def format_evaluation(name: str, result: dict[str, Any]) -> str:
    """UA, WA, macro-F1 and N of one evaluation, its per-class recalls and what was left out."""
    lines = [
        f"{name}: UA {result['ua']:.4f}  WA {result['wa']:.4f}  "
        f"macro-F1 {result['macro_f1']:.4f}  N {result['num_examples']}"
    ]
    if "ci95" in result:
        lines.append(_uncertainty_line(result))
    for class_name, recall in result["per_class_recall"].items():
        lines.append(f"  {class_name:<12} recall {'n/a' if recall is None else f'{recall:.4f}'}")
    left_out = result.get("left_out") or {}
    if any(left_out.values()):
        lines.append(f"  left out (not in the label map): {left_out}")
    return "\n".join(lines)


def _uncertainty_line(result: dict[str, Any]) -> str:
    """The UA interval, the worst speaker and the calibration of a scored split."""
    worst = result["worst_speaker"]
    return (
        f"  UA 95% CI {_interval(result)}  worst speaker {worst['speaker']} UA "
        f"{worst['ua']:.4f}  ECE {result['ece']:.4f}  Brier {result['brier']:.4f}"
    )


def _interval(summary: dict[str, Any]) -> str:
    """The UA's speaker-bootstrap interval in percent, or nothing for a summary without one."""
    if "ci95" not in summary:
        return ""
    low, high = summary["ci95"]["ua"]
    return f"[{_percent(low)}, {_percent(high)}]"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _protocol_lines(results: dict) -> list[str]:
    """How a run's utterances were scored, its split's protocol, the test text overlap and
    calibration, as far as `results` says (a run of an older version says less)."""
    lines = []
    if "evaluation" in results:
        windows = (results.get("test") or {}).get("windows")
        scored = "whole utterances" if results["evaluation"] == "utterance" else "centre crops"
        lines.append(f"scored on {scored}" + (f" ({windows} test windows)" if windows else ""))
    if results.get("speaker_independent") is False:
        lines.append(
            f"protocol {results.get('protocol', '?')}: SPEAKER-DEPENDENT split, not comparable "
            "with speaker-independent results"
        )
    elif "protocol" in results:
        lines.append(f"protocol {results['protocol']}: speaker-independent")
    for corpus in results.get("corpora", []):
        left_out = {name: n for name, n in corpus.get("left_out", {}).items() if n}
        lines.append(
            f"corpus {corpus['name']} ({corpus['dataset']}, {results.get('mixture')} mixture): "
            + ", ".join(f"{theirs}->{ours}" for theirs, ours in corpus["label_map"].items())
            + (f"; left out {left_out}" if left_out else "")
        )
    overlap = results.get("text_overlap")
    if overlap:
        lines.append(
            f"text overlap: {overlap['test_utterances']} of {overlap['of']} test utterances share "
            f"a {overlap['unit']} with a training utterance"
        )
    test = results.get("test") or {}
    if "ece" in test:
        lines.append(
            f"test calibration: ECE {test['ece']:.3f}, Brier {test['brier']:.3f} at temperature "
            f"{results.get('temperature', 1.0):.3g}"
        )
    return ["", *lines] if lines else []


def format_table(results: dict) -> str:
    """A plain-text console table: UA, WA, macro-F1 (all %), N and the UA's 95% interval (when
    the split has one) per split, how they were scored and on which protocol, then test recalls.

    Args:
      results: optional "validation" and "test" entries shaped like `summarize`'s output.
    """
    splits = [split for split in ("validation", "test") if results.get(split) is not None]
    if not splits:
        return "no results"
    rows = []
    for split in splits:  # a mixture's splits are followed by a row per corpus ("  test a")
        rows.append((split, results[split]))
        per_corpus = results[split].get("per_corpus", {})
        rows.extend((f"  {split} {corpus}", summary) for corpus, summary in per_corpus.items())
    width = max(10, *(len(label) for label, _ in rows))
    row = "{:<" + str(width) + "}  {:>7}  {:>7}  {:>10}  {:>7}  {}"
    lines = [row.format("split", "UA %", "WA %", "macro-F1 %", "N", "UA 95% CI")]
    for label, summary in rows:
        lines.append(
            row.format(
                label,
                _percent(summary["ua"]),
                _percent(summary["wa"]),
                _percent(summary["macro_f1"]),
                summary["num_examples"],
                _interval(summary),
            ).rstrip()
        )

    lines.extend(_protocol_lines(results))
    recall = (results.get("test") or {}).get("per_class_recall")
    if recall:
        name_width = max(len(name) for name in recall)
        lines.append("")
        lines.append("test recall %")
        lines.extend(f"  {name.ljust(name_width)}  {_percent(r):>7}" for name, r in recall.items())
    return "\n".join(lines)
