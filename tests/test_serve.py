"""Tests of the HTTP service: its API against a real server on 127.0.0.1, its page in chromium."""

import concurrent.futures
import contextlib
import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile
import uvicorn

from emohrnet_jax import predict, serve, serve_batching, timeline_output
from emohrnet_jax.predict_output import json_line
from tests import helpers

# Small enough to test cheaply: a 2.5 s clip is ~80 kB of 16-bit WAV.
LIMITS = serve.Limits(max_request_bytes=1_000_000, max_audio_seconds=10.0, batch_wait_seconds=0.2)


def wav_of(waveform) -> bytes:
    """16 kHz 16-bit WAV bytes of a waveform."""
    out = io.BytesIO()
    soundfile.write(out, waveform, 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def wav_bytes(seconds: float, index: int = 0) -> bytes:
    """A synthetic utterance as 16 kHz 16-bit WAV bytes."""
    return wav_of(helpers.speech(seconds, index=index))


@contextlib.contextmanager
def running(app, timeout: float = 60.0):
    """`app` served by uvicorn on a free port of 127.0.0.1 in a thread; yields its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def predictor(saved_run):
    """The run's Predictor, its model compiled (as the command does before it listens)."""
    loaded = predict.Predictor(saved_run.workdir, batch_size=8)
    loaded.window_logits(np.zeros((1, 32, 32), np.float32))
    return loaded


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """The folder under which the service makes each request's temporary folder."""
    folder = tmp_path_factory.mktemp("serve") / "a" / "uploads"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def service(predictor, uploads):
    """`(url, app)` of a server with small limits, for the module."""
    app = serve.create_app(predictor, LIMITS, upload_dir=str(uploads))
    with running(app) as url:
        yield url, app


@pytest.fixture
def client(service):
    with httpx.Client(base_url=service[0], timeout=60.0) as session:
        yield session


def _post(client, data: bytes, name: str = "clip.wav", route: str = "/predict"):
    return client.post(route, files={"audio": (name, data, "audio/wav")})


def test_health(client, saved_run):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["classes"] == list(saved_run.config.data.class_names)
    assert body["step"] == 4  # the best-validation checkpoint


def test_a_clip_is_scored_as_predict_prints_it(client, predictor, tmp_path):
    data = wav_bytes(2.5)
    response = _post(client, data, "my clip.wav")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    (tmp_path / "my_clip.wav").write_bytes(data)
    [(_, expected)] = predictor.predict_files([str(tmp_path / "my_clip.wav")])
    wanted = json.loads(json_line("my_clip.wav", expected))
    got = response.json()
    assert list(got) == list(wanted)  # the same keys in the same order
    assert got["label"] == wanted["label"]
    assert (got["path"], got["windows"], got["seconds"]) == ("my_clip.wav", 9, 2.5)
    for name, p in wanted["probabilities"].items():
        assert got["probabilities"][name] == pytest.approx(p, abs=1e-5)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"RIFF\x00\x01\x02\x03WAVEfmt not really a wav file", "cannot decode audio"),
        (b"", None),
        (b"\x1aE\xdf\xa3 webm bytes soundfile cannot decode", "cannot decode audio"),
        (wav_of(helpers.speech(2.0)[8000:9600]), "shorter than 0.25 s"),  # 0.1 s of speech
        (wav_of(np.zeros(16000)), "silent"),
    ],
    ids=["corrupt", "empty", "unsupported", "too_short", "silent"],
)
def test_bad_audio_is_a_json_422(client, data, reason):
    response = _post(client, data, "bad.wav")
    assert response.status_code == 422
    body = response.json()
    assert body["path"] == "bad.wav" and body["error"] and "detail" in body
    if reason:
        assert body["error"] == reason


def test_too_long_audio_is_refused(client):
    response = _post(client, wav_bytes(12.0))
    assert response.status_code == 413
    assert response.json()["error"] == "audio too long"
    assert "10 s" in response.json()["detail"]


def _raw_request(
    url: str, head: bytes, body_parts: list[bytes], pause_before_last: float = 0.0
) -> tuple[int, dict]:
    """Sends a request over a plain socket, part by part; returns the status and JSON body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head)
        for i, part in enumerate(body_parts):
            if i == len(body_parts) - 1:
                time.sleep(pause_before_last)
            connection.sendall(part)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), json.loads(body)


def test_a_large_declared_body_is_refused_before_it_is_sent(service):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n"
    )
    status, body = _raw_request(service[0], head, [])  # none of the gigabyte arrives
    assert status == 413 and body["error"] == "request too large"


def test_a_large_chunked_body_is_refused_as_it_arrives(service):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    start = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    payloads = [start + bytes(199_998 - len(start))] + [bytes(199_998)] * 4
    # 10 bytes under the 1 MB limit, a pause (so the server has read them), then 100 bytes more
    # and never the end: the server must answer while the body is still arriving.
    parts = [b"%x\r\n%s\r\n" % (len(p), p) for p in [*payloads, bytes(100)]]
    status, body = _raw_request(service[0], head, parts, pause_before_last=0.3)
    assert status == 413 and body["error"] == "request too large"


def test_not_multipart_is_a_json_415(client):
    response = client.post("/predict", json={"audio": "clip.wav"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported content type"


@pytest.mark.parametrize(
    "form",
    [
        {"files": {"file": ("clip.wav", b"RIFF", "audio/wav")}},
        {"data": {"audio": "clip.wav"}, "files": {"other": ("x.txt", b"", "text/plain")}},
    ],
    ids=["other_field", "text_field"],
)
def test_a_missing_audio_field_is_a_json_400(client, form):
    response = client.post("/predict", **form)
    assert response.status_code == 400
    assert response.json()["error"] == "missing field"


def test_a_malformed_multipart_body_is_a_json_400(client):
    headers = {"content-type": "multipart/form-data"}  # no boundary
    response = client.post("/predict", content=b"--x\r\n", headers=headers)
    assert response.status_code == 400
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.parametrize(
    "filename, shown",
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows\\x.wav", "x.wav"),
        ("C:\\clips\\a b.wav", "a_b.wav"),
        ("..", "audio"),
        (".hidden.wav", "hidden.wav"),
        ("", "audio"),
        (None, "audio"),
        ("col\u00e8re\x00.wav", "col\u00e8re_.wav"),
    ],
)
def test_safe_name(filename, shown):
    assert serve.safe_name(filename) == shown


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/tmp/owned.wav", "../../../x.wav"])
def test_hostile_file_names_stay_in_the_temporary_folder(client, uploads, filename):
    response = _post(client, wav_bytes(1.0), filename)
    assert response.status_code == 200
    assert response.json()["path"] == serve.safe_name(filename)
    assert not list(uploads.iterdir()), "the request's temporary folder was left behind"
    root = uploads.parent.parent
    assert sorted(p.name for p in root.rglob("*")) == ["a", "uploads"]
    assert not os.path.exists("/tmp/owned.wav")


def test_timeline_answers_as_predict_timeline_prints_with_the_windows(client, predictor, tmp_path):
    clip = tmp_path / "talk.wav"
    clip.write_bytes(wav_bytes(3.0))
    response = _post(client, clip.read_bytes(), "../talk.wav", route="/timeline")
    assert response.status_code == 200
    body = response.json()
    expected = predictor.timeline(str(clip))
    assert {k: v for k, v in body.items() if k != "windows"} == json.loads(
        json.dumps(timeline_output.record("talk.wav", expected))
    )
    assert [w["start"] for w in body["windows"]] == pytest.approx(expected.window_starts.tolist())
    first = body["windows"][0]["probabilities"]
    assert list(first) == list(predictor.class_names)
    np.testing.assert_allclose(list(first.values()), expected.probabilities[0], atol=1e-6)


def _rows(batch: np.ndarray) -> np.ndarray:
    """A stand-in for the model: each window's first two values."""
    return batch.reshape(len(batch), -1)[:, :2]


def test_the_scorer_shares_batches_and_gives_each_request_its_rows():
    calls = []

    def score(batch):
        calls.append(len(batch))
        return _rows(batch)

    scorer = serve_batching.BatchScorer(score, batch_size=4, wait_seconds=0.5)
    jobs = [np.random.default_rng(n).normal(size=(n, 2, 3)) for n in (3, 5, 6)]
    try:
        futures = [scorer.submit(windows) for windows in jobs]
        for windows, future in zip(jobs, futures, strict=True):
            np.testing.assert_array_equal(future.result(timeout=30), _rows(windows))
    finally:
        scorer.close()
    # 14 windows in 4 calls: 3 of the first request and 1 of the second, 4, 4, 2.
    assert calls == [4, 4, 4, 2]
    assert scorer.stats.shared_batches == 1 and scorer.stats.requests == 3


def test_a_failed_batch_fails_its_requests_only():
    def score(batch):
        if np.isnan(batch).any():
            raise FloatingPointError("not finite")
        return _rows(batch)

    scorer = serve_batching.BatchScorer(score, batch_size=4, wait_seconds=0.0)
    try:
        bad = scorer.submit(np.full((2, 2, 3), np.nan))
        with pytest.raises(FloatingPointError):
            bad.result(timeout=30)
        good = scorer.submit(np.ones((2, 2, 3)))
        np.testing.assert_array_equal(good.result(timeout=30), np.ones((2, 2)))
    finally:
        scorer.close()


def _post_many(url: str, clips: list[bytes]) -> list[httpx.Response]:
    def one(data):
        with httpx.Client(base_url=url, timeout=120.0) as session:
            return _post(session, data)

    with concurrent.futures.ThreadPoolExecutor(len(clips)) as pool:
        return list(pool.map(one, clips))


@pytest.mark.slow
def test_concurrent_requests_are_all_answered_in_shared_batches(service):
    url, app = service
    stats = app.state.service.scorer.stats
    before = (stats.batches, stats.shared_batches, stats.requests)
    # 1 s: 3 windows each; 8 requests (24 windows) fit in three 8-window batches.
    clips = [wav_bytes(1.0, index=i % 4) for i in range(8)]
    responses = _post_many(url, clips)
    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json()["windows"] == 3 for r in responses)
    batches, shared, requests = (
        stats.batches - before[0],
        stats.shared_batches - before[1],
        stats.requests - before[2],
    )
    assert requests == 8
    assert shared >= 1, "no model call held the windows of two requests"
    assert batches < 8, f"{batches} model calls for 8 requests: nothing was batched"
    health = httpx.get(f"{url}/health", timeout=30).json()
    assert health["batching"]["shared_batches"] == stats.shared_batches


@pytest.mark.slow
def test_requests_beyond_the_limit_are_told_to_retry(predictor):
    limits = serve.Limits(max_concurrent=2, batch_wait_seconds=1.0)
    with running(serve.create_app(predictor, limits)) as url:
        responses = _post_many(url, [wav_bytes(1.0)] * 6)
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"] == "busy"


@pytest.mark.slow
def test_the_command_serves_the_run(saved_run, tmp_path):
    with socket.socket() as probe:  # a free port (a race with other programs is unlikely)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "emohrnet_jax.serve",
        f"--workdir={saved_run.workdir}",
        f"--port={port}",
        f"--compilation_cache={tmp_path / 'cache'}",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "the service did not answer /health"
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                        break
                time.sleep(0.5)
            with httpx.Client(base_url=url, timeout=60) as session:
                response = _post(session, wav_bytes(2.0))
                page = session.get("/")
            assert response.status_code == 200 and response.json()["windows"] == 7
            assert page.status_code == 200 and 'id="file"' in page.text
        finally:
            process.terminate()
            process.wait(30)


def _chromium(download_dir: pathlib.Path):
    """Debian's headless chromium through its chromedriver (no downloaded browser)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,1100",
        f"--user-data-dir={download_dir}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _upload_on_page(driver, clip: pathlib.Path) -> str:
    """Picks `clip` in the page's file input; returns the timeline's state once it is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "file").send_keys(str(clip))
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.ID, "label").text)
    note = driver.find_element(By.ID, "timeline-note")
    return wait.until(lambda d: note.get_attribute("data-state"))


@pytest.mark.slow
def test_the_page_scores_an_uploaded_clip(service, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clips = [tmp_path / "first.wav", tmp_path / "interview.wav"]
    clips[0].write_bytes(wav_bytes(3.0, index=1))
    clips[1].write_bytes(wav_bytes(6.0, index=2))
    driver = _chromium(pathlib.Path(tempfile.mkdtemp(prefix="chromium_", dir=tmp_path)))
    try:
        driver.set_page_load_timeout(30)
        driver.get(service[0] + "/")
        WebDriverWait(driver, 30).until(lambda d: "Classes:" in d.find_element(By.ID, "run").text)
        classes = driver.execute_script("return classes")
        assert _upload_on_page(driver, clips[0]) == "drawn"
        assert driver.find_element(By.ID, "label").text in classes
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == len(classes)
        assert _upload_on_page(driver, clips[1]) == "drawn"
        # The band's first pixel column is a class colour (a segment), not the background.
        pixel = driver.execute_script(
            "const canvas = document.getElementById('timeline');"
            "return Array.from(canvas.getContext('2d').getImageData(60, 20, 1, 1).data);"
        )
        assert pixel[3] == 255 and pixel[:3] != [255, 255, 255]
        assert "interview.wav" in driver.find_element(By.ID, "details").text
        screenshot = tmp_path / "serve_page.png"
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    # For people to look at (the path is printed with -s): the page as the test saw it.
    print(f"screenshot: {screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
