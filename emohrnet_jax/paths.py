"""Paths given by users: `~` expanded, and URLs that the code cannot write refused up front."""

import os
import re

# A scheme such as gs://, s3://, http://: not a local path, and opening it with os calls would
# quietly create a folder named "gs:" in the working directory.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class PathError(ValueError):
    """A path that cannot be used (a URL where only local paths work)."""


def local(path: str | None, what: str) -> str | None:
    """`path` with `~` expanded; None stays None.

    Args:
      path: as the user gave it.
      what: how the user gave it, for the error (e.g. "--workdir", "config.data.data_dir").

    Raises:
      PathError: `path` is a URL (gs://, s3://, ...): only local paths are supported for now.
    """
    if path is None:
        return None
    if _URL.match(path):
        raise PathError(
            f"{what}={path}: URLs ({path.split('://')[0]}://) are not supported yet; "
            "give a local path (or a mounted bucket, e.g. with gcsfuse)"
        )
    return os.path.expanduser(path)
