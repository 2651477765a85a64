"""What `predict` writes: one JSON line or CSV row per file, in the order the files were given."""

import csv
import io
import json
import os
import posixpath
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import tqdm

from emohrnet_jax import storage
from emohrnet_jax.audio import features

if TYPE_CHECKING:  # For the type hints only: predict imports this module.
    from emohrnet_jax.predict import Prediction, Predictor


def shown(text: str) -> str:
    """`text` (a path, or a message naming one) safe to write as UTF-8 anywhere.

    A file name that is not valid UTF-8 reaches Python with surrogate escapes, which no UTF-8
    writer accepts; its undecodable bytes are shown as backslash escapes (`clip_\\xff.wav`).
    """
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def json_line(path: str, result: "Prediction | features.AudioError", top_k: int = 0) -> str:
    """One JSON line: `path`, then `label` and `probabilities` (+ `top_k`) or `error`."""
    if isinstance(result, features.AudioError):
        record = {"path": shown(path), "error": result.reason, "detail": shown(str(result))}
    else:
        record = {"path": shown(path), "label": result.label, "probabilities": result.probabilities}
        if top_k:
            record["top_k"] = [{"label": name, "probability": p} for name, p in result.top_k(top_k)]
        record.update(windows=result.windows, seconds=round(result.seconds, 3))
    return json.dumps(record)


def csv_header(class_names: Sequence[str], top_k: int = 0) -> list[str]:
    """CSV columns: a probability per class, or with `top_k` the k best classes, ranked."""
    if top_k:
        ranked = [f"{column}_{i}" for i in range(1, top_k + 1) for column in ("top", "probability")]
        return ["path", "label", *ranked, "error"]
    return ["path", "label", *class_names, "error"]


def csv_row(path: str, result: "Prediction | features.AudioError", width: int, top_k: int = 0):
    """The CSV cells of one file (`width` = number of probability columns and their labels)."""
    if isinstance(result, features.AudioError):
        return [shown(path), "", *[""] * width, shown(str(result))]
    if top_k:
        cells = [cell for name, p in result.top_k(top_k) for cell in (name, f"{p:.6f}")]
        cells += [""] * (width - len(cells))  # fewer classes than k
    else:
        cells = [f"{p:.6f}" for p in result.probabilities.values()]
    return [shown(path), result.label, *cells, ""]


def write_predictions(
    predictor: "Predictor",
    paths: Sequence[str],
    out: io.TextIOBase,
    output_format: str = "jsonl",
    top_k: int = 0,
    workers: int = 0,
    progress: bool | None = None,
) -> int:
    """Scores `paths`, writing one line per file to `out`; returns how many files failed.

    `progress`: a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    failed = 0
    writer = None
    if output_format == "csv":
        header = csv_header(predictor.class_names, top_k)
        width = len(header) - 3
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
    bar = tqdm.tqdm(
        total=len(paths), unit="file", disable=None if progress is None else not progress
    )
    for path, result in predictor.predict_files(paths, workers):
        failed += isinstance(result, features.AudioError)
        if writer is None:
            out.write(json_line(path, result, top_k) + "\n")
        else:
            writer.writerow(csv_row(path, result, width, top_k))
        bar.update()
    bar.close()
    return failed


def check_output(output: str) -> None:
    """Fails in one line, before any work, when `output` cannot be written.

    Raises:
      OSError: the local folder of `output` is missing; storage.StorageError: its bucket is
        missing, refuses writes or does not answer.
      ValueError: a gs:// `output` that names a folder (ends in "/"), not an object.
    """
    if not storage.is_url(output):
        if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
            raise FileNotFoundError(f"the folder of --output={output} does not exist")
        return
    if output.endswith("/"):
        raise ValueError(f"--output={output}: name an object (gs://BUCKET/PATH/FILE), not a folder")
    storage.check_writable(posixpath.dirname(output), "the folder of --output")


def write_file(write: Callable, output: str) -> int:
    """`write` into `output` (a file or a gs:// object) atomically; returns the failures.

    A gs:// object is written locally, then uploaded in one object write: it appears complete
    or not at all.
    """
    if not storage.is_url(output):
        return _write_local(write, output)
    with tempfile.TemporaryDirectory(prefix="emohrnet_jax_predict_") as folder:
        name = posixpath.basename(output)
        failed = _write_local(write, os.path.join(folder, name))
        storage.upload_files(folder, posixpath.dirname(output), [name])
    return failed


def _write_local(write: Callable, output: str) -> int:
    """`write` into `output` through a temporary file, never left behind; returns the failures."""
    temporary = f"{output}.tmp"
    try:
        # UTF-8 whatever the locale: names are written as `shown` makes them.
        with open(temporary, "w", newline="", encoding="utf-8") as out:
            failed = write(out)
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return failed


def write_stdout(write: Callable) -> int | None:
    """`write` to standard output; returns the failures (None: the reader closed it early)."""
    try:
        failed = write(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`| head`): end quietly, as command-line tools do. Standard
        # output goes to /dev/null so that Python's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return None
    return failed
