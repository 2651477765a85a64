"""Which folders an export may write: an absent or empty one, or with `--overwrite` a previous
export, never a training run. The names of an export's files are here too.
"""

import os
import posixpath

from emohrnet_jax import storage

JAX_FILE = "model.jax_exported"
SAVED_MODEL_DIR = "saved_model"
METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"
MODEL_FILES = {JAX_FILE, SAVED_MODEL_DIR, ONNX_FILE}
EXPORT_FILES = {*MODEL_FILES, METADATA_FILE, METADATA_FILE + ".tmp"}
# Keys of metadata.json that every export writes: how `--overwrite` recognises a previous export.
EXPORT_KEYS = ("class_names", "feature_params", "input", "outputs", "files", "checkpoint")


def check_replaceable(output: str, workdir: str, overwrite: bool) -> None:
    """Refuses an `output` that exporting would destroy.

    Only an absent or empty folder, or with `overwrite` a previous export (its `metadata.json`
    has the `EXPORT_KEYS`, and it holds nothing else than an export writes), may be written;
    never a folder that is, or holds, the run being exported or any other run.

    A gs:// `output` is a prefix: its objects are what it holds.

    Raises:
      FileExistsError: with the reason, in one line.
    """
    if storage.is_url(output):
        if storage.path(output).is_file():
            raise FileExistsError(f"{output} is an object: give a prefix (folder) for the export")
        if not storage.list_files(output):
            return
    else:
        if not os.path.lexists(output):
            return
        if not os.path.isdir(output) or os.path.islink(output):
            raise FileExistsError(f"{output} is a file or a link: give a folder for the export")
        if not os.listdir(output):
            return
    if not overwrite:
        raise FileExistsError(f"{output} is not empty (pass --overwrite to replace an export)")
    run = _run_inside(output, workdir)
    if run is not None:
        raise FileExistsError(
            f"--overwrite will not replace {output}: it holds the training run {run}"
        )
    if not _is_export(output):
        raise FileExistsError(
            f"--overwrite replaces only a previous export, and {output} is not one (it needs a "
            f"{METADATA_FILE} of an export and nothing else than {JAX_FILE}, {SAVED_MODEL_DIR}/, "
            f"{ONNX_FILE})"
        )


def _run_inside(folder: str, workdir: str) -> str | None:
    """The run that `folder` is or holds (`workdir`, or any folder with a config.json and a
    checkpoints/ folder), or None."""
    if storage.is_url(folder):
        return _run_under_prefix(folder, workdir)
    real, run = os.path.realpath(folder), os.path.realpath(workdir)
    if run == real or run.startswith(real.rstrip(os.sep) + os.sep):
        return workdir
    for below, subfolders, names in os.walk(folder):
        if "config.json" in names and "checkpoints" in subfolders:
            return below
    return None


def _run_under_prefix(url: str, workdir: str) -> str | None:
    """`_run_inside` for a gs:// prefix: a run is a config.json beside objects in checkpoints/."""
    base = url.rstrip("/")
    if workdir.rstrip("/") == base or workdir.startswith(base + "/"):
        return workdir
    names = storage.list_files(url)
    folders = {posixpath.dirname(name) for name in names}
    for name in names:
        below = posixpath.dirname(name)
        checkpoints = posixpath.join(below, "checkpoints")
        if posixpath.basename(name) == "config.json" and any(
            folder == checkpoints or folder.startswith(checkpoints + "/") for folder in folders
        ):
            return posixpath.join(base, below) if below else base
    return None


def _is_export(folder: str) -> bool:
    """Whether `folder` holds only what `export_run` writes, with an export's metadata.

    A gs:// prefix holding export files without metadata.json is an upload cut short (which
    removes metadata.json first and writes it last), so it counts as an export too.
    """
    url = storage.is_url(folder)
    if url:
        names = {name.split("/")[0] for name in storage.list_files(folder)}
        if METADATA_FILE not in names:
            return names <= MODEL_FILES
    else:
        names = set(os.listdir(folder))
    if not names <= EXPORT_FILES - {METADATA_FILE + ".tmp"}:
        return False
    try:
        info = storage.read_json(os.path.join(folder, METADATA_FILE))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and all(key in info for key in EXPORT_KEYS)
