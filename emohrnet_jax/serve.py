r"""An HTTP service and a web page over a trained run: emotion of uploaded audio.

  python -m emohrnet_jax.serve --workdir=runs/demo --port=8000
  curl -F audio=@clip.wav http://127.0.0.1:8000/predict

Routes: `GET /health` (status, the run's classes, the served step, the batching counters);
`POST /predict` with the file in the multipart field `audio`: the JSON line that
`python -m emohrnet_jax.predict` prints for that file (`path` is the uploaded file's name,
sanitized); `POST /timeline` (same field): the file's emotion over time; `GET /`: a page to drop
a file on or record from the microphone (emohrnet_jax/serve_page.html).

Errors are JSON `{"error": ..., "detail": ...}`: 422 for audio that cannot be scored (corrupt,
empty, too short, a format soundfile does not decode), 413 for a request over `--max_request_bytes`
(counted while the body arrives) or audio over `--max_audio_seconds`, 415 without a multipart
body, 400 without the `audio` field, 503 with Retry-After when `--max_concurrent` requests are
already being served. Uploads are written only into a fresh temporary folder per request, under a
sanitized name, and removed with it. The windows of concurrent requests share model calls
(emohrnet_jax/serve_batching.py).
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import numpy as np
from absl import app, flags, logging

from emohrnet_jax import cli, compilation_cache, paths, runs, timeline_output
from emohrnet_jax.audio import features
from emohrnet_jax.predict_output import json_line
from emohrnet_jax.serve_batching import BatchScorer

# The page, one self-contained file in the package.
PAGE = "serve_page.html"
# Characters kept in an uploaded file's name: no separators, no control characters.
_UNSAFE = re.compile(r"[^\w.\-]")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask of the service."""

    max_request_bytes: int = 64 * 1024 * 1024
    max_audio_seconds: float = 1800.0
    max_concurrent: int = 8  # requests being served; beyond them: 503
    batch_wait_seconds: float = 0.005  # a batch that is not full waits this long for others


class ClientError(Exception):
    """A request the service refuses: its status and the JSON body's `error` and `detail`."""

    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None):
        super().__init__(f"{error}: {detail}")
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def safe_name(filename: str | None) -> str:
    """An uploaded file's name reduced to its last component in word characters, `.` and `-`.

    No separator, `..`, leading dot or control character survives ("../../etc/passwd" ->
    "passwd", "C:\\x\\a b.wav" -> "a_b.wav"); "audio" when nothing is left.
    """
    last = re.split(r"[\\/]", filename or "")[-1]
    name = _UNSAFE.sub("_", last).lstrip(".")[-100:]
    return name or "audio"


def error_response(error: ClientError):
    """The JSON response of a refused request."""
    from starlette.responses import JSONResponse

    body = {"error": error.error, "detail": error.detail}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused (413) as it arrives.

    A declared Content-Length over the limit is refused before reading; otherwise the bytes are
    counted chunk by chunk, so a chunked or lying upload stops at the limit, never buffered whole.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await error_response(self._too_large())(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise self._too_large()
            return message

        return await self.app(scope, counted, send)

    def _too_large(self) -> ClientError:
        detail = f"the request is over the limit of {self.limit} bytes (--max_request_bytes)"
        return ClientError(413, "request too large", detail)


class Service:
    """The served run: its Predictor, the batching worker, the limits, the requests in flight."""

    def __init__(self, predictor, limits: Limits, upload_dir: str | None = None):
        self.predictor, self.limits, self.upload_dir = predictor, limits, upload_dir
        self.scorer = BatchScorer(
            predictor.window_logits, predictor.batch_size, limits.batch_wait_seconds
        )
        self.active = 0

    @contextlib.contextmanager
    def admitted(self):
        """A place among `max_concurrent` requests, or 503 (the event loop's thread only)."""
        if self.active >= self.limits.max_concurrent:
            detail = f"{self.active} requests are being served (--max_concurrent); retry shortly"
            raise ClientError(503, "busy", detail, headers={"Retry-After": "1"})
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def check_length(self, path: str) -> None:
        """Refuses audio longer than `max_audio_seconds` from its header, before decoding it."""
        with features.open_audio(path) as sound:
            seconds = sound.frames / sound.samplerate
        self._check_seconds(seconds)

    def _check_seconds(self, seconds: float) -> None:
        limit = self.limits.max_audio_seconds
        if seconds > limit:
            detail = (
                f"{seconds:.1f} s of audio, over the limit of {limit:g} s (--max_audio_seconds)"
            )
            raise ClientError(413, "audio too long", detail)

    def windows(self, path: str) -> tuple[np.ndarray, float]:
        """The file's model windows and seconds, as `Predictor.predict_files` makes them.

        Raises:
          features.AudioError: the file cannot be scored.
        """
        self.check_length(path)
        loaded = self.predictor.file_mel(path)
        if isinstance(loaded, features.AudioError):
            raise loaded
        mel, statistics, seconds = loaded
        self._check_seconds(seconds)
        return np.stack(list(self.predictor.windowing.windows(mel, statistics))), seconds

    async def predict(self, path: str, name: str) -> str:
        """The JSON line of `predict` for the upload at `path`, shown as `name`."""
        windows, seconds = await asyncio.to_thread(self.windows, path)
        logits = await asyncio.wrap_future(self.scorer.submit(windows))
        return json_line(name, self.predictor.prediction(logits, seconds))

    async def timeline(self, path: str, name: str) -> dict:
        """The timeline of the upload at `path` as `predict --timeline` prints it (`path` =
        `name`), with each scored window (`start`, `end`, `probabilities`) for the page.

        Raises:
          features.AudioError: the file cannot be scored.
        """
        await asyncio.to_thread(self.check_length, path)
        result = await asyncio.to_thread(self.predictor.timeline, path)
        self._check_seconds(result.seconds)
        names = result.class_names
        windows = [
            {
                "start": window.start,
                "end": window.end,
                "probabilities": dict(zip(names, map(float, window.probabilities), strict=True)),
            }
            for window in result.windows()
        ]
        return timeline_output.record(name, result) | {"windows": windows}


@contextlib.asynccontextmanager
async def uploaded(request, service: Service) -> AsyncIterator[tuple[str, str]]:
    """`(path, name)` of the request's `audio` file, saved in a temporary folder of its own."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        detail = "send multipart/form-data with the audio file in the field 'audio'"
        raise ClientError(415, "unsupported content type", f"got {content_type!r}: {detail}")
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("audio")
        if upload is None or isinstance(upload, str):
            raise ClientError(400, "missing field", "no file in the multipart field 'audio'")
        name = safe_name(upload.filename)
        with tempfile.TemporaryDirectory(prefix="emohrnet_jax_serve_", dir=service.upload_dir) as d:
            path = os.path.join(d, name)
            # The name has no separator and no leading dot: this is a check, not a fix.
            if os.path.dirname(os.path.realpath(path)) != os.path.realpath(d):
                raise ClientError(400, "bad file name", repr(upload.filename))
            await asyncio.to_thread(_copy, upload.file, path)
            yield path, name


def _copy(source, path: str) -> None:
    source.seek(0)
    with open(path, "xb") as out:
        shutil.copyfileobj(source, out)


def create_app(predictor, limits: Limits = Limits(), upload_dir: str | None = None):
    """The Starlette app serving `predictor` (a `predict.Predictor`) within `limits`.

    Args:
      upload_dir: where each request's temporary folder is made (None: the system's).

    Returns:
      The ASGI app; `app.state.service` holds the Service (and its batching counters).
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    service = Service(predictor, limits, upload_dir)

    async def health(request):
        return JSONResponse(
            {
                "status": "ok",
                "classes": list(predictor.class_names),
                "step": int(predictor.best["step"]),
                "batching": dataclasses.asdict(service.scorer.stats),
            }
        )

    async def page(request):
        return HTMLResponse(resources.files("emohrnet_jax").joinpath(PAGE).read_text("utf-8"))

    def scoring(score: Callable, encode: Callable[[Any], str] = str) -> Callable:
        """A POST route: `encode(await score(path, name))` of the uploaded file, or its 422."""

        async def route(request):
            with service.admitted():
                async with uploaded(request, service) as (path, name):
                    try:
                        body = encode(await score(path, name))
                    except features.AudioError as error:
                        return Response(json_line(name, error), 422, media_type="application/json")
            return Response(body, media_type="application/json")

        return route

    async def refused(request, error: ClientError):
        return error_response(error)

    async def http_error(request, error: HTTPException):  # e.g. a malformed multipart body
        return error_response(ClientError(error.status_code, "bad request", str(error.detail)))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(service.scorer.close)

    starlette_app = Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/predict", scoring(service.predict), methods=["POST"]),
            Route("/timeline", scoring(service.timeline, json.dumps), methods=["POST"]),
        ],
        middleware=[Middleware(BodyLimit, limit=limits.max_request_bytes)],
        exception_handlers={ClientError: refused, HTTPException: http_error},
        lifespan=lifespan,
    )
    starlette_app.state.service = service
    return starlette_app


def _define_flags() -> None:
    # Defined only when run as a script, so that tests can import this module beside others.
    flags.DEFINE_string(
        "workdir", None, "Training run folder or gs:// URL (config.json, checkpoints/)."
    )
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
    flags.DEFINE_integer("port", 8000, "TCP port to listen on.", lower_bound=0)
    flags.DEFINE_integer(
        "max_request_bytes",
        Limits.max_request_bytes,
        "Largest request body; a larger one is refused (413) while it arrives.",
        lower_bound=1,
    )
    flags.DEFINE_float(
        "max_audio_seconds",
        Limits.max_audio_seconds,
        "Longest audio a request may send (413 beyond).",
        lower_bound=0.0,
    )
    flags.DEFINE_integer(
        "max_concurrent",
        Limits.max_concurrent,
        "Requests served at once (decoding or waiting for the model); more are refused with 503 "
        "and Retry-After.",
        lower_bound=1,
    )
    flags.DEFINE_float(
        "batch_wait_ms",
        1000 * Limits.batch_wait_seconds,
        "How long a model batch that is not full waits for other requests' windows.",
        lower_bound=0.0,
    )
    flags.DEFINE_integer(
        "batch_size", 64, "Windows per model call, shared across requests.", lower_bound=1
    )
    cli.define_compilation_cache_flag()
    flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    """The command line: loads the run, compiles the model, serves until interrupted."""
    options = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not options["verbosity"].present:  # orbax's INFO lines would bury uvicorn's.
        logging.set_verbosity(logging.WARNING)
    cli.quiet_console()
    try:
        import uvicorn
    except ImportError as error:
        cli.exit_with(
            ImportError(f"{error.name} is missing: pip install 'emohrnet-jax[serve]'"), "serve"
        )
    from emohrnet_jax import predict, storage

    storage.configure()
    compilation_cache.enable(options.compilation_cache)
    try:
        workdir = paths.location(options.workdir, "--workdir")
        predictor = predict.Predictor(workdir, batch_size=options.batch_size)
    except (ValueError, runs.RunError) as error:
        cli.exit_with(error, "serve")
    # Compiled before the first request, which would otherwise wait for it.
    predictor.window_logits(
        np.zeros((1, predictor.feature_params.n_mels, predictor.num_frames), np.float32)
    )
    limits = Limits(
        max_request_bytes=options.max_request_bytes,
        max_audio_seconds=options.max_audio_seconds,
        max_concurrent=options.max_concurrent,
        batch_wait_seconds=options.batch_wait_ms / 1000,
    )
    uvicorn.run(create_app(predictor, limits), host=options.host, port=options.port)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
