"""The path layer against a real Cloud Storage API server on 127.0.0.1 (issue 17)."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from emohrnet_jax import locks, paths, storage


def test_every_client_is_pointed_at_the_emulator_from_one_variable():
    environ = {"STORAGE_EMULATOR_HOST": "127.0.0.1:9"}
    storage.configure(environ)
    assert environ["TENSORSTORE_GCS_HTTP_URL"] == "http://127.0.0.1:9"
    assert environ["EPATH_USE_TF"] == "false"  # gs:// through gcsfs, not TensorFlow's client
    assert environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    assert "GOOGLE_AUTH_TOKEN_FOR_TESTING" in environ
    google = {}
    storage.configure(google)  # Google's endpoint: nothing is redirected, no token is faked
    assert google == {"EPATH_USE_TF": "false"}


def test_user_paths_take_gs_urls_and_refuse_other_schemes():
    assert paths.location("gs://b/run", "--workdir") == "gs://b/run"
    assert paths.location("~/run", "--workdir") == os.path.expanduser("~/run")
    with pytest.raises(paths.PathError, match=r"--workdir=s3://b/x: s3:// is not supported"):
        paths.location("s3://b/x", "--workdir")


def test_json_written_read_and_replaced_in_a_bucket(gcs):
    path = f"{gcs}/run/results.json"
    storage.write_json_atomically(path, {"ua": 0.5})
    storage.write_json_atomically(path, {"ua": 0.75})
    assert storage.read_json(path) == {"ua": 0.75}
    assert storage.isdir(f"{gcs}/run") and not storage.exists(f"{gcs}/other")


def test_a_writable_bucket_passes_the_probe_and_keeps_no_probe_object(gcs):
    storage.check_writable(f"{gcs}/run", "--workdir")
    assert not storage.exists(f"{gcs}/run")


def test_a_missing_bucket_fails_the_probe_at_once(gcs):
    start = time.monotonic()
    with pytest.raises(storage.StorageError) as error:
        storage.check_writable("gs://no-such-bucket/run", "--workdir")
    assert (
        str(error.value)
        == "--workdir=gs://no-such-bucket/run: bucket gs://no-such-bucket does not exist"
    )
    assert time.monotonic() - start < 5


class _ReadOnly(http.server.BaseHTTPRequestHandler):
    """A bucket this client may list but not write to, answering as Cloud Storage does."""

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer(200, {"kind": "storage#objects", "items": []})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        message = "reader@project lacks storage.objects.create access"
        self._answer(403, {"error": {"code": 403, "message": message}})

    def log_message(self, *args):
        pass


def test_a_bucket_refusing_writes_fails_the_probe_in_one_line(gcs):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReadOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "import sys\n"
        "from emohrnet_jax import storage\n"
        "try:\n"
        "    storage.check_writable('gs://read-only/run', '--workdir')\n"
        "except storage.StorageError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{server.server_port}"}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    server.shutdown()
    assert result.stdout == (
        "--workdir=gs://read-only/run: cannot write there (Forbidden; reader@project lacks "
        "storage.objects.create access)\n"
    ), result
    assert time.monotonic() - start < 20


def test_trees_upload_with_the_marker_last_and_download_only_what_changed(gcs, tmp_path):
    source = tmp_path / "build"
    (source / "shards").mkdir(parents=True)
    (source / "shards" / "a.tfrecord").write_bytes(b"a" * 100)
    (source / "dataset_info.json").write_text("{}")
    storage.upload_tree(str(source), f"{gcs}/build", last=["dataset_info.json"])
    mirror = tmp_path / "mirror"
    storage.download_tree(f"{gcs}/build", str(mirror))
    assert (mirror / "shards" / "a.tfrecord").read_bytes() == b"a" * 100

    (source / "shards" / "a.tfrecord").unlink()  # a rebuild with other shards, same-size bytes
    (source / "shards" / "b.tfrecord").write_bytes(b"b" * 100)
    storage.upload_tree(str(source), f"{gcs}/build", last=["dataset_info.json"])
    storage.download_tree(f"{gcs}/build", str(mirror))
    assert sorted(p.name for p in (mirror / "shards").iterdir()) == ["b.tfrecord"]
    (mirror / "dataset_info.json").write_text('{"edited": 1}')  # same size would not do
    storage.download_tree(f"{gcs}/build", str(mirror))
    assert (mirror / "dataset_info.json").read_text() == "{}"


def test_a_folder_in_a_bucket_moves_whole(gcs):
    storage.write_json_atomically(f"{gcs}/checkpoints/4/a.json", {"a": 1})
    storage.write_json_atomically(f"{gcs}/checkpoints/4/b/c.json", {"c": 1})
    storage.move(f"{gcs}/checkpoints/4", f"{gcs}/checkpoints_damaged/4")
    assert not storage.exists(f"{gcs}/checkpoints/4")
    assert storage.read_json(f"{gcs}/checkpoints_damaged/4/b/c.json") == {"c": 1}


def test_a_lease_in_a_bucket_names_its_holder_and_is_released(gcs):
    in_use = r"the workdir gs://.* is in use by process \d+ on .*, renewed 0 s ago"
    with (
        locks.hold(f"{gcs}/run", "the workdir"),
        pytest.raises(locks.LockedError, match=in_use),
        locks.hold(f"{gcs}/run", "the workdir"),
    ):
        pass
    with locks.hold(f"{gcs}/run", "the workdir"):
        pass
    assert not storage.exists(f"{gcs}/run/.lock")


def test_a_lease_is_renewed_while_held_and_taken_over_once_stale(gcs, monkeypatch):
    monkeypatch.setattr(locks, "RENEW_S", 0.05)
    with locks.hold(f"{gcs}/run", "the workdir"):
        first = storage.read_json(f"{gcs}/run/.lock")["renewed"]
        time.sleep(0.5)
        assert storage.read_json(f"{gcs}/run/.lock")["renewed"] > first
    # A holder that died without deleting its lease (kill -9, a lost VM).
    stale = {"pid": 1, "host": "tpu-vm-0", "command": "main.py", "since": "then", "renewed": 0}
    storage.write_json_atomically(f"{gcs}/run/.lock", stale)
    with locks.hold(f"{gcs}/run", "the workdir"):
        assert storage.read_json(f"{gcs}/run/.lock")["pid"] == os.getpid()


@pytest.mark.parametrize("where", ["bucket", "local"])
def test_an_exclusive_create_fails_where_something_is(gcs, tmp_path, where):
    path = f"{gcs}/run/.lock" if where == "bucket" else str(tmp_path / ".lock")
    storage.create_exclusively(path, b"first")
    with pytest.raises(FileExistsError):
        storage.create_exclusively(path, b"second")
    assert storage.path(path).read_bytes() == b"first"


def test_gs_paths_bypass_tensorflow_even_after_a_local_path(gcs, tmp_path, monkeypatch):
    from etils import epath
    from etils.epath import gpath

    monkeypatch.delenv("EPATH_USE_TF", raising=False)
    gpath._is_tf_installed.cache_clear()
    assert epath.Path(tmp_path).exists()  # etils now caches "use TensorFlow's GCS client"
    storage.write_json_atomically(f"{gcs}/run/a.json", {"a": 1})  # would fail: no googleapis.com
    assert storage.read_json(f"{gcs}/run/a.json") == {"a": 1}
