"""A Cloud Storage API server on 127.0.0.1 for tests (gcp-storage-emulator, in memory).

Two behaviours of Cloud Storage that the emulator lacks are added here, as the project's clients
rely on them: downloads carry the object's generation (`x-goog-generation`, which TensorStore
reads, so OCDBT checkpoints work), and uploads honour `ifGenerationMatch` (OCDBT's manifest and
the leases of emohrnet_jax.locks are conditional writes).

`serve()` starts it in a subprocess on a free port and stops it on exit; every client the
project uses reaches it through STORAGE_EMULATOR_HOST alone (see emohrnet_jax.storage). One
server serves the whole test session (conftest's `gcs` fixture): fsspec keeps one gcsfs client
per process, made for the first endpoint it saw.
"""

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

BUCKET = "emohrnet-test"
_START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve() -> Iterator[str]:
    """Runs an emulator holding the empty bucket BUCKET; yields its URL (http://127.0.0.1:PORT)."""
    port = _free_port()
    command = [sys.executable, os.path.abspath(__file__), str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Cloud Storage emulator did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _add_cloud_storage_behaviours() -> None:
    """Wraps the emulator's download and upload handlers (before its server module is loaded)."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    download, insert = objects.download, objects.insert
    # The server answers each request in a thread of its own, and its in-memory files are written
    # in place: without the lock a download could read an object half uploaded (and two
    # conditional writes could both pass their check), which Cloud Storage never allows.
    whole_objects = threading.Lock()

    def download_with_generation(request, response, storage, *args, **kwargs):
        params = request.params
        with whole_objects:
            try:
                found = storage.get_file_obj(params["bucket_name"], params["object_id"])
                response["x-goog-generation"] = found["generation"]
                response["x-goog-metageneration"] = found["metageneration"]
            except NotFound:
                pass
            return download(request, response, storage, *args, **kwargs)

    def insert_if_generation_matches(request, response, storage, *args, **kwargs):
        with whole_objects:
            return _insert(request, response, storage, *args, **kwargs)

    def _insert(request, response, storage, *args, **kwargs):
        wanted = request.query.get("ifGenerationMatch")
        name = request.query.get("name", [None])[0]
        if name is None and isinstance(request.data, dict):  # multipart: named in the metadata
            name = request.data.get("meta", {}).get("name")
        if wanted and name:
            try:
                found = storage.get_file_obj(request.params["bucket_name"], name)["generation"]
            except NotFound:
                found = "0"
            if found != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "Precondition Failed"}})
                return None
        return insert(request, response, storage, *args, **kwargs)

    objects.download = download_with_generation
    objects.insert = insert_if_generation_matches


if __name__ == "__main__":
    _add_cloud_storage_behaviours()
    from gcp_storage_emulator.__main__ import main

    main(
        [
            "start",
            "--host=127.0.0.1",
            f"--port={sys.argv[1]}",
            "--in-memory",
            f"--default-bucket={BUCKET}",
            "--quiet",
        ]
    )
