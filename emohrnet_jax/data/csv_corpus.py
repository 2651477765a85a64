"""The labelled-folder corpus: a user's CSV of `path,label,speaker` (optional `id`) -> a listing.

The CSV must be UTF-8 and list each audio file once; its errors name the line and the fix.
"""

import collections
import csv
import io
import os
from collections.abc import Sequence

from emohrnet_jax.data import corpora

_CSV_COLUMNS = ("path", "label", "speaker")


def _csv_text(csv_path: str) -> str:
    """The CSV's text; a file that is not UTF-8 is an error naming the line and the fix."""
    with open(csv_path, "rb") as f:
        data = f.read()
    try:
        # A spreadsheet's byte-order mark would otherwise stick to the first column's name.
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{csv_path}:{line}: not UTF-8 (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet's Save As)"
        ) from None


def _csv_rows(csv_path: str, expected: str) -> list[tuple[int, str, str, str, str]]:
    """(line number, absolute path, label, speaker, id) of each row of a labelled-folder CSV."""
    folder = os.path.dirname(os.path.abspath(csv_path))
    reader = csv.DictReader(io.StringIO(_csv_text(csv_path), newline=""))
    columns = [(name or "").strip() for name in reader.fieldnames or []]
    missing = [name for name in _CSV_COLUMNS if name not in columns]
    if missing:
        raise ValueError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; found header "
            f"{','.join(columns) or '(none)'}, expected {expected}"
        )
    reader.fieldnames = columns
    rows = []
    for row in reader:
        cells = {name: (row.get(name) or "").strip() for name in (*_CSV_COLUMNS, "id")}
        for name in _CSV_COLUMNS:
            if not cells[name]:
                raise ValueError(f"{csv_path}:{reader.line_num}: empty {name} cell")
        path = os.path.abspath(os.path.join(folder, cells["path"]))
        utterance_id = cells["id"] or os.path.splitext(os.path.basename(path))[0]
        rows.append((reader.line_num, path, cells["label"], cells["speaker"], utterance_id))
    return rows


def _check_unique(csv_path: str, rows: list[tuple[int, str, str, str, str]]) -> None:
    """Each file once and each id once: a file listed twice would be in the corpus twice."""
    file_line, id_line = {}, {}
    for line, path, _, _, utterance_id in rows:
        real = os.path.realpath(path)
        if real in file_line:
            raise ValueError(
                f"{csv_path}: line {line} lists the same file as line {file_line[real]} "
                f"({path}): remove one"
            )
        if utterance_id in id_line:
            raise ValueError(
                f"{csv_path}:{line}: id {utterance_id!r} already used on line "
                f"{id_line[utterance_id]}; add an id column to tell files with equal names apart"
            )
        file_line[real], id_line[utterance_id] = line, line


def labelled_folder(
    csv_path: str,
    class_names: Sequence[str] | None = None,
    skip_unknown_labels: bool = False,
) -> tuple[corpora.Listing, tuple[str, ...]]:
    """Lists a user corpus described by a CSV with header `path,label,speaker` (and optional `id`).

    Args:
      csv_path: the CSV (UTF-8); relative paths in it are relative to its folder. Extra columns
        are ignored; each audio file may be listed once.
      class_names: the classes in order; None takes the sorted unique labels of the CSV.
      skip_unknown_labels: exclude (and count) rows whose label is not in `class_names` instead of
        raising `UnknownLabelError`.

    Returns:
      The listing (ids from the `id` column where given, otherwise the file stem) and the class
      names.
    """
    expected = "a CSV with header path,label,speaker (optional id) and one row per audio file"
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path} does not exist: expected {expected}")
    rows = _csv_rows(csv_path, expected)
    _check_unique(csv_path, rows)
    if class_names is None:
        class_names = sorted({label for _, _, label, _, _ in rows})
    class_names = tuple(class_names)
    known = set(class_names)
    utterances, excluded = [], collections.defaultdict(list)
    for line, path, label, speaker, utterance_id in rows:
        if not corpora.storable(path, excluded):
            continue
        if label not in known:
            if not skip_unknown_labels:
                raise corpora.UnknownLabelError(
                    f"{csv_path}:{line}: {path} has label {label!r}, not one of {class_names}"
                )
            excluded[f"label {label} not in class names"].append(path)
        elif not os.path.isfile(path):
            excluded[corpora.MISSING_AUDIO_FILE].append(path)
        else:
            utterances.append(corpora.Utterance(path, label, speaker, utterance_id))
    return corpora.finish(utterances, excluded, csv_path, expected, [csv_path]), class_names
