"""Files at local paths or in gs:// buckets, through one path layer (etils.epath).

gs:// goes through gcsfs (fsspec), which orbax and tfds also accept, and never through
TensorFlow's GCS client: that one has a fixed endpoint, so it could not be pointed at a Cloud
Storage emulator, and the same code would then be untestable here. `configure` points every
client the project uses (gcsfs, tensorstore for orbax's arrays) at `STORAGE_EMULATOR_HOST`
when it is set. Writes are atomic on both: a local file is written beside its name and renamed;
a Cloud Storage object appears only once its upload completes.
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from typing import Any

from etils import epath

URL_PREFIX = "gs://"
# How long a probe of a bucket may take before the bucket counts as unreachable.
PROBE_TIMEOUT_S = 20.0


class StorageError(OSError):
    """A bucket that is missing, cannot be written or does not answer."""


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` is a gs:// URL (rather than a local path)."""
    return os.fspath(path).startswith(URL_PREFIX)


def configure(environ: dict[str, str] | None = None) -> None:
    """Sets the environment that points every Cloud Storage client at the same server.

    Without STORAGE_EMULATOR_HOST the clients use Google's endpoint and the machine's
    credentials (a TPU VM's service account). With it, tensorstore gets the same base URL and a
    placeholder token (emulators accept any), and gcsfs skips a bucket-layout lookup that waits
    60 s against an emulator. Values already set are kept. Safe to call more than once.
    """
    environ = os.environ if environ is None else environ
    if "EPATH_USE_TF" not in environ:
        environ["EPATH_USE_TF"] = "false"  # gs:// through gcsfs, see the module docstring
        if environ is os.environ:
            _forget_backend_choice()
    emulator = environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        if "://" not in emulator:
            emulator = f"http://{emulator}"
        environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator)
        environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
        environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _forget_backend_choice() -> None:
    """Makes etils read EPATH_USE_TF again: it caches its first answer, even for a local path."""
    from etils.epath import gpath

    cached = getattr(gpath, "_is_tf_installed", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


def path(location: str | os.PathLike) -> epath.Path:
    """`location` as an epath.Path (a gs:// URL or a local path)."""
    if is_url(location):
        configure()
    return epath.Path(location)


def exists(location: str) -> bool:
    return path(location).exists()


def isdir(location: str) -> bool:
    return path(location).is_dir()


def makedirs(folder: str) -> None:
    """Creates a local folder and its parents; a no-op for a bucket (objects need no folder)."""
    if not is_url(folder):
        os.makedirs(folder, exist_ok=True)


def read_text(location: str) -> str:
    return path(location).read_text()


def read_json(location: str) -> Any:
    return json.loads(read_text(location))


def write_bytes_atomically(location: str, data: bytes) -> None:
    """Writes `data` so that readers see the old contents or the new, never a part."""
    if is_url(location):
        path(location).write_bytes(data)  # An object appears when its upload completes.
        return
    temporary = f"{location}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, location)
    finally:
        if os.path.exists(temporary):  # a failed write (disk full) leaves nothing behind
            os.remove(temporary)


def create_exclusively(location: str, data: bytes) -> None:
    """Writes `data` to `location` unless something is there already.

    Raises:
      FileExistsError: `location` exists (in a bucket: the upload's ifGenerationMatch=0 failed).
    """
    if is_url(location):
        _gcs().pipe_file(location, data, mode="create")
        return
    with open(location, "xb") as file:
        file.write(data)


def write_json_atomically(location: str, value: Any) -> None:
    """Writes `value` as indented JSON, atomically."""
    write_bytes_atomically(location, json.dumps(value, indent=2).encode())


def remove_tree(location: str) -> None:
    """Removes a folder (or a URL prefix) and everything under it; absent is fine."""
    target = path(location)
    if target.exists():
        target.rmtree()


def absolute(location: str) -> str:
    """A local path made absolute; a gs:// URL as it is."""
    return location if is_url(location) else os.path.abspath(location)


def move(source: str, target: str) -> None:
    """Moves the folder `source` to `target`, creating `target`'s parent as needed.

    Locally a rename; in a bucket a copy of every object then a delete (Cloud Storage has no
    rename), so a move cut short leaves objects at both names, none lost.
    """
    if is_url(source):
        fs, source, target = _gcs(), source.rstrip("/"), target.rstrip("/")
        prefix = source[len(URL_PREFIX) :] + "/"
        names = [name for name in fs.find(source) if name.startswith(prefix)]
        for name in names:  # copies (rewrites) only: gcsfs's move waits out a moveTo API refusal
            fs.cp_file(name, target + name[len(source) - len(URL_PREFIX) :])
        fs.rm(names)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(source, target)


def _gcs() -> Any:
    import fsspec  # epath's own gcsfs backend; imported late as only gs:// needs it

    configure()
    return fsspec.filesystem("gs")


def _bucket(url: str) -> str:
    return url[len(URL_PREFIX) :].split("/", 1)[0]


def check_writable(folder: str, what: str) -> None:
    """Fails within seconds, before any work, when `folder` (gs://) cannot be written.

    Writes and removes a small probe object. A local folder is checked by creating it.

    Raises:
      StorageError: the bucket does not exist, refuses the write, or does not answer within
        PROBE_TIMEOUT_S (the message names the endpoint).
    """
    if not is_url(folder):
        os.makedirs(folder, exist_ok=True)
        return
    bucket = _bucket(folder)
    if not bucket:
        raise StorageError(f"{what}={folder}: no bucket in the URL (gs://BUCKET/PATH)")
    pool = concurrent.futures.ThreadPoolExecutor(1)
    probe = pool.submit(_probe, folder, bucket)
    pool.shutdown(wait=False)  # A hung request must not keep the caller waiting.
    try:
        probe.result(timeout=PROBE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com")
        raise StorageError(
            f"{what}={folder}: Cloud Storage ({endpoint}) did not answer in {PROBE_TIMEOUT_S:.0f} s"
        ) from None
    except FileNotFoundError:
        raise StorageError(f"{what}={folder}: bucket gs://{bucket} does not exist") from None
    except OSError as error:  # gcsfs: "Forbidden: URL\nthe server's message", and the like
        raise StorageError(f"{what}={folder}: cannot write there ({_reason(error)})") from None


def _probe(folder: str, bucket: str) -> None:
    fs = _gcs()
    fs.ls(bucket)  # A missing bucket answers 404 at once; an upload to one retries for ~30 s.
    name = f"{folder.rstrip('/')}/.write-probe-{uuid.uuid4().hex}"
    fs.pipe_file(name, b"probe")
    fs.rm_file(name)


def _reason(error: BaseException) -> str:
    """gcsfs's error in one line, without the request's URL."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    status = lines[0].split(":", 1)[0]
    return "; ".join([status, *lines[1:]]) if len(lines) > 1 else lines[0]


def _relative_files(url: str) -> dict[str, str]:
    """Every object under the gs:// prefix `url`: relative name -> MD5 (hex; "" for a composite
    object, which has none, so it never counts as unchanged)."""
    prefix = url.rstrip("/")[len(URL_PREFIX) :] + "/"
    found = _gcs().find(url.rstrip("/"), detail=True)
    return {
        name[len(prefix) :]: base64.b64decode(info.get("md5Hash") or "").hex()
        for name, info in found.items()
        if name.startswith(prefix) and info.get("type") != "directory"
    }


def list_files(url: str) -> list[str]:
    """The names of every object under the gs:// prefix `url`, relative to it, sorted.

    Needs no MD5 (composite objects have none); folder placeholders (names ending in "/", which
    some tools make) are left out.
    """
    prefix = url.rstrip("/")[len(URL_PREFIX) :] + "/"
    found = _gcs().find(url.rstrip("/"), detail=True)
    return sorted(
        name[len(prefix) :]
        for name, info in found.items()
        if name.startswith(prefix) and not name.endswith("/") and info.get("type") != "directory"
    )


def _md5(file_path: str) -> str:
    digest = hashlib.md5()
    with open(file_path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_files(folder: str) -> dict[str, str]:
    """Every file under the local `folder`: relative name -> MD5 (hex)."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            found[os.path.relpath(full, folder)] = _md5(full)
    return found


def upload_tree(folder: str, url: str, last: Iterable[str] = ()) -> None:
    """Makes the gs:// prefix `url` hold exactly the files of the local `folder`.

    Objects under `url` that `folder` lacks are removed first, the names in `last` (relative
    paths, e.g. the file whose presence marks the tree complete) are removed before and
    uploaded after everything else, so a reader never finds the marker beside a partial tree.
    """
    fs = _gcs()
    last = list(last)
    local = _local_files(folder)
    remote = _relative_files(url)
    if local == remote:
        return
    base = url.rstrip("/")
    for name in [*last, *sorted(set(remote) - set(local))]:
        if name in remote:
            fs.rm_file(f"{base}/{name}")
    for name in sorted(set(local) - set(last)) + [n for n in last if n in local]:
        if remote.get(name) == local[name] and name not in last:
            continue
        fs.put_file(os.path.join(folder, name), f"{base}/{name}")


def upload_files(folder: str, url: str, names: Iterable[str]) -> None:
    """Uploads the local files `folder/name` to `url/name`, replacing those objects only."""
    fs = _gcs()
    for name in names:
        fs.put_file(os.path.join(folder, name), f"{url.rstrip('/')}/{name}")


def download_tree(url: str, folder: str) -> None:
    """Makes the local `folder` hold exactly the objects under the gs:// prefix `url`.

    Files whose MD5 already matches are kept; each new file is written beside its name and
    renamed, so an interrupted download leaves no partial file under its real name.
    """
    fs = _gcs()
    remote = _relative_files(url)
    local = _local_files(folder) if os.path.isdir(folder) else {}
    for name in set(local) - set(remote):
        os.remove(os.path.join(folder, name))
    for name, digest in sorted(remote.items()):
        if local.get(name) == digest:
            continue
        target = os.path.join(folder, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(f"{url.rstrip('/')}/{name}", target + ".download")
        os.replace(target + ".download", target)


def cache_dir() -> str:
    """The local folder for copies of gs:// data (EMOHRNET_JAX_CACHE, or ~/.cache/emohrnet_jax)."""
    return os.path.expanduser(
        os.environ.get("EMOHRNET_JAX_CACHE") or os.path.join("~", ".cache", "emohrnet_jax")
    )


def local_mirror(url: str) -> str:
    """The local folder that mirrors the gs:// prefix `url` (under `cache_dir()`)."""
    return os.path.join(cache_dir(), "gs", *url[len(URL_PREFIX) :].strip("/").split("/"))
