"""What `predict --timeline` writes: a JSON line, CSV rows or RTTM lines per file, and a PNG.

- JSON lines: `{"path", "segments": [{"start", "end", "label", "probabilities"}, ...],
  "seconds"}`, or predict's error line `{"path", "error", "detail"}`.
- CSV: a header `path, start, end, label, <a probability column per class>, error`, a row per
  segment (a file without speech: one row with empty cells; a failed file: its error).
- RTTM (NIST's Rich Transcription Time Marked, as diarization tools read it; fields as dscore's
  README lists them): `SPEAKER <file> 1 <onset> <duration> <NA> <NA> <label> <NA> <NA>`, the
  emotion in the speaker-name field, the file id the base name without extension. A failed file
  has no lines; its error goes to stderr.
"""

import csv
import functools
import io
import json
import os
import posixpath
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import tqdm
from absl import flags

from emohrnet_jax import storage, timeline
from emohrnet_jax.audio import features
from emohrnet_jax.files import read_ahead
from emohrnet_jax.predict_output import shown

if TYPE_CHECKING:  # For the type hints only: predict imports this module.
    from emohrnet_jax.predict import Predictor

FORMATS = ("jsonl", "csv", "rttm")
# One colour per class, in the run's class order (matplotlib's tab10).
_COLOURS = (
    "tab:gray",
    "tab:orange",
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)


def record(path: str, result: "timeline.Timeline | features.AudioError") -> dict:
    """The JSON record of one file (see the module)."""
    if isinstance(result, features.AudioError):
        return {"path": shown(path), "error": result.reason, "detail": shown(str(result))}
    return {
        "path": shown(path),
        "segments": [segment.as_dict() for segment in result.segments],
        "seconds": round(result.seconds, 3),
    }


def csv_header(class_names: Sequence[str]) -> list[str]:
    return ["path", "start", "end", "label", *class_names, "error"]


def csv_rows(path: str, result, width: int) -> list[list[str]]:
    """The CSV rows of one file (`width` probability columns)."""
    if isinstance(result, features.AudioError):
        return [[shown(path), "", "", "", *[""] * width, shown(str(result))]]
    if not result.segments:
        return [[shown(path), "", "", "", *[""] * width, ""]]
    return [
        [
            shown(path),
            f"{s.start:.3f}",
            f"{s.end:.3f}",
            s.label,
            *[f"{p:.6f}" for p in s.probabilities.values()],
            "",
        ]
        for s in result.segments
    ]


def rttm_lines(path: str, result: "timeline.Timeline") -> list[str]:
    """The RTTM lines of one file's segments (see the module)."""
    name = posixpath.splitext(posixpath.basename(shown(path).replace(os.sep, "/")))[0]
    name = "_".join(name.split()) or "recording"  # RTTM fields are split on whitespace.
    return [
        f"SPEAKER {name} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> <NA> {s.label} <NA> <NA>"
        for s in result.segments
    ]


def plot(result: "timeline.Timeline", path: str, title: str = "") -> None:
    """A PNG: the log-Mel spectrogram, a band coloured by segment label, and the probabilities of
    the windows with speech (at their centres).

    A local path or gs:// (written atomically).
    """
    # Here, not at the top: predict imports this module, and matplotlib adds ~0.4 s to its start.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 6), layout="constrained")
    spectrum, band, curves = figure.subplots(
        3, 1, sharex=True, height_ratios=(3, 0.4, 2), squeeze=True
    )
    spectrum.imshow(
        result.overview,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, result.seconds, 0, result.overview.shape[0]),
    )
    spectrum.set_ylabel("Mel band")
    spectrum.set_title(title or "emotion over time")
    colours = dict(zip(result.class_names, _COLOURS, strict=False))
    for segment in result.segments:
        band.axvspan(segment.start, segment.end, color=colours.get(segment.label, "black"))
    band.set_yticks([])
    band.set_ylabel("label", rotation=0, ha="right", va="center")
    centres = (result.window_starts + result.window_ends) / 2
    for k, name in enumerate(result.class_names):
        # Windows without speech are left out: their probabilities say nothing.
        values = np.where(result.speech > 0, result.probabilities[:, k], np.nan)
        curves.plot(centres, values, color=colours.get(name, "black"), label=name)
    curves.set_ylim(0.0, 1.2)  # room for the legend above the curves
    curves.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    curves.set_ylabel("probability")
    curves.set_xlabel("seconds")
    curves.set_xlim(0.0, result.seconds)
    curves.legend(loc="upper right", ncols=len(result.class_names), fontsize=8)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    storage.write_bytes_atomically(path, png.getvalue())


def png_name(path: str) -> str:
    """The PNG's file name for an input: its base name, `.png` appended."""
    return posixpath.basename(shown(path).replace(os.sep, "/")) + ".png"


def write_timelines(
    predictor: "Predictor",
    paths: Sequence[str],
    out: io.TextIOBase,
    output_format: str = "jsonl",
    png_dir: str | None = None,
    params: timeline.TimelineParams | None = None,
    progress: bool | None = None,
    workers: int = 0,
) -> int:
    """Writes each file's timeline to `out` (and a PNG into `png_dir`); returns the failures.

    `workers` threads score files ahead of the writing, in order (0: none).
    """

    def score(path: str) -> "timeline.Timeline | features.AudioError":
        try:
            return predictor.timeline(path, params=params)
        except features.AudioError as error:
            return error

    failed = 0
    writer = None
    if png_dir:
        storage.makedirs(png_dir)
    if output_format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(csv_header(predictor.class_names))
    bar = tqdm.tqdm(
        total=len(paths), unit="file", disable=None if progress is None else not progress
    )
    for path, result in zip(paths, read_ahead(score, paths, workers), strict=True):
        failed += isinstance(result, features.AudioError)
        if writer is not None:
            writer.writerows(csv_rows(path, result, len(predictor.class_names)))
        elif output_format == "rttm":
            if isinstance(result, features.AudioError):
                print(f"predict: {shown(path)}: {shown(str(result))}", file=sys.stderr)
            else:
                out.writelines(line + "\n" for line in rttm_lines(path, result))
        else:
            out.write(json.dumps(record(path, result)) + "\n")
        if png_dir and not isinstance(result, features.AudioError):
            plot(result, _join(png_dir, png_name(path)), title=shown(path))
        bar.update()
    bar.close()
    return failed


def _join(folder: str, name: str) -> str:
    """`folder/name` for a local folder or a gs:// prefix."""
    return f"{folder.rstrip('/')}/{name}" if storage.is_url(folder) else os.path.join(folder, name)


def define_flags() -> None:
    """predict's timeline flags (`--format=rttm` is among predict's formats)."""
    flags.DEFINE_bool("timeline", False, "Segments over time per file (emohrnet_jax.timeline).")
    flags.DEFINE_string("timeline_png", None, "With --timeline: a PNG per file in this folder.")
    flags.DEFINE_float(
        "switch_penalty",
        timeline.TimelineParams.switch_penalty,
        "Timeline smoothing: nats per label change (0: none).",
        lower_bound=0.0,
    )
    flags.DEFINE_float(
        "top_db",
        timeline.TimelineParams.top_db,
        "Timeline speech: frames within this many dB of the loudest so far (lower it for noisy "
        "recordings).",
        lower_bound=0.1,
    )


def check_flags(options: flags.FlagValues) -> None:
    """Raises ValueError for timeline-only flags given without `--timeline`."""
    if (options.format == "rttm" or options.timeline_png) and not options.timeline:
        raise ValueError("--format=rttm and --timeline_png need --timeline")


def writer(predictor: "Predictor", paths: Sequence[str], options: flags.FlagValues) -> Callable:
    """`write_timelines` of `paths` as predict's flags ask, for predict_output's writers."""
    params = timeline.TimelineParams(switch_penalty=options.switch_penalty, top_db=options.top_db)
    return functools.partial(
        write_timelines,
        predictor,
        paths,
        output_format=options.format,
        png_dir=options.timeline_png,
        params=params,
        workers=options.workers,
    )
