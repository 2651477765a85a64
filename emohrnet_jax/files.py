"""Finding the audio files under a local folder (for the data tools and prediction)."""

import os
from collections.abc import Iterable, Iterator


def walk_files(root: str, extensions: Iterable[str]) -> Iterator[str]:
    """Files under the folder `root` whose extension is one of `extensions`, in sorted order.

    Each folder's files come before its subfolders, both sorted by name. Linked folders are
    followed, each real folder walked once (so a link back to an ancestor ends the walk there).
    Paths are `root` joined with the names below it, as given (not made absolute).

    Args:
      root: a folder.
      extensions: lowercase extensions with their dot (".wav"); names match case-insensitively.
    """
    extensions = tuple(extensions)
    seen = set()
    # Links are followed because audio is often linked in from a shared disk; `seen` keeps a link
    # cycle (or the same folder reached twice) from being walked again.
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        for name in sorted(names):
            if os.path.splitext(name)[1].lower() in extensions:
                yield os.path.join(folder, name)
