r"""Emotion of live audio: windows scored as the chunks arrive, one JSON line per window.

  arecord -f S16_LE -r 16000 -c 1 | python -m emohrnet_jax.stream --workdir=runs/demo
  ffmpeg -i in.mp3 -f s16le -ac 1 -ar 16000 - | python -m emohrnet_jax.stream --workdir=runs/demo

Raw PCM on stdin (`--format=s16le` little-endian int16, or `f32le` float32; `--channels`
interleaved, any `--sample_rate`), read `--chunk_seconds` at a time. Each line:
`{"start", "end", "label", "probabilities", "speech"}` (seconds from the stream's start; `label`
the window's most probable class, unsmoothed; `speech` the fraction of its frames that are
speech). The windows, their probabilities and `speech` equal the offline timeline's
(`Predictor.timeline(...).windows()`) of the same audio, as a test checks.

A window is emitted as soon as its last STFT frame can be made: `n_fft / 2` samples after the
window's end (plus soxr's held-back samples when resampling, and the rest of the chunk that
completed it). Any instant of the audio lies in a window that ends at most a window's length plus
one hop later, so the latency bound is `(num_frames + hop_frames) * hop_length / sample_rate +
n_fft / 2 / sample_rate` plus one chunk (docs/serving.md gives the demo's figure). Memory: the
STFT context and one window's frames plus a hop, whatever the stream's length.
"""

import json
import sys

import numpy as np
from absl import app, flags, logging

from emohrnet_jax import cli, compilation_cache, runs, timeline
from emohrnet_jax.audio import features, streaming

# --format: the numpy dtype of each raw PCM format and the scale to [-1, 1].
PCM_FORMATS = {"s16le": ("<i2", 1 / 32768), "f32le": ("<f4", 1.0)}


class Stream:
    """Windows of a recording given in chunks, scored once complete (see the module)."""

    def __init__(
        self,
        predictor,
        sample_rate: int,
        channels: int = 1,
        params: timeline.TimelineParams | None = None,
    ):
        """A stream at `sample_rate` Hz of `channels` interleaved channels, for `predictor`
        (`params.top_db` decides speech; None: `TimelineParams()`)."""
        params = params or timeline.TimelineParams()
        if sample_rate < 1 or channels < 1:
            raise ValueError(f"need sample_rate >= 1 and channels >= 1: {sample_rate}, {channels}")
        fp = predictor.feature_params
        self.predictor = predictor
        self.channels = channels
        self.frame_seconds = fp.hop_length / fp.sample_rate
        self._resampler = streaming.Resampler(sample_rate, fp.sample_rate)
        self._framer = streaming.Framer(fp)
        self._detector = timeline.SpeechDetector(params.top_db)
        self._mel = np.zeros((fp.n_mels, 0), features.STORED_DTYPE)  # Frames from `_offset` on.
        self._mask = np.zeros(0, bool)
        self._offset = 0
        self._next = 0  # The next window on the hop grid.
        self._last = -1  # The last window emitted.
        self._finished = False

    @property
    def frames(self) -> int:
        """Frames made so far."""
        return self._offset + self._mel.shape[1]

    def push(self, chunk: np.ndarray) -> list[timeline.Window]:
        """The windows that `chunk` completes.

        Args:
          chunk: `(samples,)` or `(samples, channels)` (or interleaved `(samples * channels,)`)
            floats in [-1, 1], or int16 PCM.
        """
        if self._finished:
            raise ValueError("the stream is finished")
        samples = self._resampler.push(self._mono(chunk))
        return self._add(self._framer.push(samples))

    def finish(self) -> list[timeline.Window]:
        """The last windows (the one ending at the stream's end, as offline); ends the stream."""
        if self._finished:
            return []
        self._finished = True
        out = self._add(self._framer.push(self._resampler.finish()))
        out += self._add(self._framer.finish())
        if self._resampler.sent == 0:
            return out
        starts = [s for s in self.predictor.window_starts(self.frames) if s > self._last]
        return out + self._score(starts)

    def _mono(self, chunk: np.ndarray) -> np.ndarray:
        audio = np.asarray(chunk)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768
        audio = audio.astype(np.float32).reshape(-1, self.channels)
        return audio.mean(axis=1) if self.channels > 1 else audio[:, 0]

    def _add(self, mel: np.ndarray) -> list[timeline.Window]:
        self._mel = np.concatenate([self._mel, mel], axis=1)
        self._mask = np.concatenate([self._mask, self._detector.push(mel)])
        n, hop = self.predictor.num_frames, self.predictor.hop_frames
        starts = []
        while self._next + n <= self.frames:
            starts.append(self._next)
            self._next += hop
        out = self._score(starts)
        # Kept: the next grid window's frames, and those of a last window ending at the end.
        keep = min(self._next, max(0, self.frames - n)) - self._offset
        self._mel, self._mask = self._mel[:, keep:], self._mask[keep:]
        self._offset += keep
        return out

    def _score(self, starts: list[int]) -> list[timeline.Window]:
        if not starts:
            return []
        n = self.predictor.num_frames
        # Frames reach half an FFT past the audio: a last window ends with the audio.
        seconds = self._resampler.sent / self.predictor.feature_params.sample_rate
        relative = [s - self._offset for s in starts]
        probabilities = timeline.window_probabilities(self.predictor, self._mel, relative)
        self._last = starts[-1]
        return [
            timeline.Window(
                start=s * self.frame_seconds,
                end=min((s + n) * self.frame_seconds, seconds),
                probabilities=p,
                speech=float(self._mask[r : r + n].mean()),
            )
            for s, r, p in zip(starts, relative, probabilities, strict=True)
        ]


def json_line(window: timeline.Window, class_names) -> str:
    """One window as the stream command prints it."""
    return json.dumps(
        {
            "start": round(window.start, 3),
            "end": round(window.end, 3),
            "label": class_names[int(np.argmax(window.probabilities))],
            "probabilities": {
                name: float(p) for name, p in zip(class_names, window.probabilities, strict=True)
            },
            "speech": round(window.speech, 3),
        }
    )


def run(
    stream: Stream,
    source,
    out,
    pcm_format: str = "s16le",
    chunk_seconds: float = 0.1,
    sample_rate: int = 16000,
) -> int:
    """Feeds raw PCM from the binary file `source` to `stream`, a line per window to `out`;
    returns the windows written."""
    dtype, scale = PCM_FORMATS[pcm_format]
    frame_bytes = np.dtype(dtype).itemsize * stream.channels
    size = max(1, round(chunk_seconds * sample_rate)) * frame_bytes
    names, written, rest = stream.predictor.class_names, 0, b""
    while True:
        data = source.read(size)
        if not data:
            break
        data, rest = rest + data, b""
        whole = len(data) - len(data) % frame_bytes
        data, rest = data[:whole], data[whole:]
        chunk = np.frombuffer(data, dtype).astype(np.float32) * scale
        for window in stream.push(chunk):
            out.write(json_line(window, names) + "\n")
            out.flush()
            written += 1
    for window in stream.finish():
        out.write(json_line(window, names) + "\n")
        written += 1
    out.flush()
    return written


def _define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Training run folder or gs:// URL.")
    flags.DEFINE_integer("sample_rate", 16000, "Of the PCM on stdin, in Hz.", lower_bound=1)
    flags.DEFINE_integer("channels", 1, "Interleaved channels on stdin.", lower_bound=1)
    flags.DEFINE_enum("format", "s16le", list(PCM_FORMATS), "Raw PCM sample format on stdin.")
    flags.DEFINE_float("chunk_seconds", 0.1, "Audio read from stdin at a time.", lower_bound=0.001)
    flags.DEFINE_integer("batch_size", 1, "Windows per model call.", lower_bound=1)
    flags.DEFINE_integer(
        "hop_frames", 0, "Frames between window starts (0: half a window).", lower_bound=0
    )
    flags.DEFINE_float(
        "top_db",
        timeline.TimelineParams.top_db,
        "Speech: within this many dB of the loudest frame so far.",
        lower_bound=0.1,
    )
    cli.define_compilation_cache_flag()
    flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> int:
    """Reads stdin until it ends, printing a JSON line per window."""
    from emohrnet_jax.predict import Predictor  # JAX only once the flags are parsed.

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: the audio comes on stdin")
    options = flags.FLAGS
    if not options["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    cli.quiet_console()
    compilation_cache.enable(options.compilation_cache)
    try:
        predictor = Predictor(
            options.workdir, batch_size=options.batch_size, hop_frames=options.hop_frames or None
        )
    except runs.RunError as error:
        sys.exit(f"stream: {error}")
    params = timeline.TimelineParams(top_db=options.top_db)
    stream = Stream(predictor, options.sample_rate, options.channels, params)
    try:
        run(
            stream,
            sys.stdin.buffer,
            sys.stdout,
            options.format,
            options.chunk_seconds,
            options.sample_rate,
        )
    except BrokenPipeError:
        return 141
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
