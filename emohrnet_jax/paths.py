"""Paths given by users: `~` expanded, and URLs that the code cannot use refused up front."""

import os
import re

# A scheme such as gs://, s3://, http://: not a local path, and opening it with os calls would
# quietly create a folder named "gs:" in the working directory.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class PathError(ValueError):
    """A path that cannot be used (a URL the code cannot read or write there)."""


def local(path: str | None, what: str) -> str | None:
    """`path` with `~` expanded; None stays None.

    Args:
      path: as the user gave it.
      what: how the user gave it, for the error (e.g. "--workdir", "config.data.data_dir").

    Raises:
      PathError: `path` is a URL (gs://, s3://, ...): only local paths work there.
    """
    if path is None:
        return None
    if _URL.match(path):
        raise PathError(
            f"{what}={path}: give a local path here (URLs such as "
            f"{path.split('://')[0]}:// are read only from the workdir, data_dir and outputs)"
        )
    return os.path.expanduser(path)


def location(path: str | None, what: str) -> str | None:
    """`path` with `~` expanded, or a gs:// URL as it is; None stays None.

    Raises:
      PathError: `path` is a URL of another scheme (s3://, http://, ...).
    """
    if path is None or path.startswith("gs://"):
        return path
    if _URL.match(path):
        raise PathError(
            f"{what}={path}: {path.split('://')[0]}:// is not supported; give a local path or a "
            "gs:// URL"
        )
    return os.path.expanduser(path)
