"""Finding the audio files under a folder or a gs:// prefix (for the data tools and prediction),
and reading them ahead in threads."""

import collections
import concurrent.futures
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence

from emohrnet_jax import storage

# Extensions predict picks up when walking a folder; a file named on the command line is always
# tried.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


def walk_files(root: str, extensions: Iterable[str]) -> Iterator[str]:
    """Files under the folder `root` whose extension is one of `extensions`, in sorted order.

    Each folder's files come before its subfolders, both sorted by name. Linked folders are
    followed, each real folder walked once (so a link back to an ancestor ends the walk there).
    Paths are `root` joined with the names below it, as given (not made absolute). A gs:// `root`
    is a prefix: its objects are listed in the same order, as URLs.

    Args:
      root: a folder, or a gs:// URL.
      extensions: lowercase extensions with their dot (".wav"); names match case-insensitively.
    """
    extensions = tuple(extensions)
    if storage.is_url(root):
        yield from _walk_objects(root, extensions)
        return
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


def _walk_order(name: str) -> list[tuple[int, str]]:
    """A sort key that puts a folder's files (0) before its subfolders (1), as the walk does."""
    *folders, file = name.split("/")
    return [(1, folder) for folder in folders] + [(0, file)]


def _walk_objects(root: str, extensions: tuple[str, ...]) -> Iterator[str]:
    """The objects under the gs:// prefix `root` with one of `extensions`, in `walk_files` order."""
    names = [
        name
        for name in storage.list_files(root)
        if posixpath.splitext(name)[1].lower() in extensions
    ]
    for name in sorted(names, key=_walk_order):
        yield posixpath.join(root, name)


def audio_paths(arguments: Iterable[str]) -> list[str]:
    """Files named in `arguments`, folders walked recursively in sorted order (audio only).

    Paths are joined onto the argument as given (not made absolute), so that the output names
    files the way the user did; a gs:// argument is an object or a prefix, its files URLs. A
    missing path is kept: it becomes an error line.
    """
    found = []
    for argument in arguments:
        if storage.isdir(argument):
            found += walk_files(argument, AUDIO_EXTENSIONS)
        else:
            found.append(argument)
    return found


def read_ahead(function: Callable, items: Sequence, workers: int) -> Iterator:
    """`map(function, items)` in order (e.g. decoding files), computed up to a few items ahead in
    `workers` threads."""
    if workers < 1:
        yield from map(function, items)
        return
    # Threads, not processes: decoding, resampling and the STFT release the GIL, and a worker
    # process would import JAX again. The bound keeps memory flat over thousands of files.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
