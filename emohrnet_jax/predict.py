r"""Emotion predictions for audio files with a trained run's best-validation state.

  python -m emohrnet_jax.predict --workdir=runs/demo clip.wav more_clips/ > predictions.jsonl
  python -m emohrnet_jax.predict --workdir=runs/demo --format=csv --top_k=2 --output=out.csv clips/
  python -m emohrnet_jax.predict --workdir=gs://b/runs/demo --output=gs://b/p.jsonl gs://b/clips/

Any file that soundfile decodes (WAV, FLAC, OGG, ...), at any sample rate, mono or multichannel,
of any length. Features are made exactly as for the run's prepared training data: downmix,
resample to the run's rate, log-Mel with the run's parameters, rounding to the stored float16,
normalization as `config.data.normalization` (statistics of the whole clip, or with
`training_band` those of the run's `normalization.json`). The model sees windows of the training
crop's length (`config.data.num_frames`): a shorter clip is zero-padded at the end (as in
training), a longer one is cut into windows every `--hop_frames` (half a window by default, the
last window ending at the clip's end) whose logits are averaged before the softmax
(emohrnet_jax.windows: the windows training's evaluation scores too), divided by the temperature
fitted on the run's validation split where it has one (`calibration.json`). Files are decoded in
blocks and only their float16 log-Mel is kept (~57 MB per hour at 128 bands), so memory stays
bounded.

Folders are walked recursively in sorted order, following linked folders (each real folder
once), picking up audio extensions only (.wav .flac .ogg .oga .opus .mp3 .aif .aiff); a file
named on the command line is always tried. Windows of consecutive files fill the same batches,
so a folder of many short clips runs at full speed. A progress bar goes to stderr when it is a
terminal. `~` is expanded in paths. The run, the inputs (objects or prefixes, listed as folders
are walked) and `--output` may be gs:// URLs; another scheme (s3://) is refused before anything is
written, and so is an `--output` whose bucket is missing or refuses writes.

Output, one line per file in walk order, to stdout or `--output`:
- JSON lines (default): `path` (as walked from the arguments; bytes of a name that are not
  UTF-8 shown as `\xff`) and either `label` and `probabilities` (every class, summing to 1),
  plus `windows`, `seconds` and with `--top_k` a ranked `top_k` list; or `error` (the short
  reason, e.g. "cannot decode audio", "file not found") and `detail`.
    {"path": "clips/a.wav", "label": "happy", "probabilities": {"neutral": 0.1, ...}, ...}
    {"path": "clips/bad.wav", "error": "cannot decode audio", "detail": "..."}
- CSV (`--format=csv`): a header, then path, label, a probability column per class (or with
  `--top_k` the columns top_1, probability_1, ...), error.
- `--timeline`: the emotion over time of each file instead (emohrnet_jax.timeline_output: JSON
  lines of `path` and `segments`, CSV, `--format=rttm`; `--timeline_png=DIR` a PNG per file).
Exit status: 0; 3 when some files could not be scored (their lines say why, the others are
scored); 1 when nothing could run (no such run, no checkpoint, a checkpoint that does not fit);
141 (128 + SIGPIPE, like other tools) when the reader closed stdout early (`| head`).
"""

import collections
import dataclasses
import functools
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging

from emohrnet_jax import (
    calibration,
    cli,
    compilation_cache,
    models,
    normalization,
    paths,
    runs,
    storage,
    timeline,
    timeline_output,
    windows,
)
from emohrnet_jax import stream as live
from emohrnet_jax.audio import features, streaming
from emohrnet_jax.files import AUDIO_EXTENSIONS, audio_paths, read_ahead
from emohrnet_jax.predict_output import check_output, write_file, write_predictions, write_stdout

# Exit status when some inputs failed and the others were scored.
EXIT_SOME_FAILED = 3
# Exit status when the reader of standard output closed it early (`| head`): 128 + SIGPIPE.
EXIT_BROKEN_PIPE = 141


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The emotion of one clip: window logits averaged, then the softmax."""

    label: str  # The most probable class.
    probabilities: dict[str, float]  # Every class, in the run's class order.
    logits: np.ndarray  # `(num_classes,)` mean of the windows' logits.
    windows: int  # Windows the clip was scored with.
    seconds: float  # Duration at the run's sample rate.

    def top_k(self, k: int) -> list[tuple[str, float]]:
        """The `k` most probable classes with their probabilities, most probable first."""
        ranked = sorted(self.probabilities.items(), key=lambda item: -item[1])
        return ranked[:k]


class Predictor:
    """A run's best-validation classifier with the run's feature extraction.

    One compiled program: every batch is `batch_size` windows of `(n_mels, num_frames)`, the last
    one padded (the padding's outputs are dropped).
    """

    def __init__(
        self,
        workdir: str,
        batch_size: int = 64,
        hop_frames: int | None = None,
        block_seconds: float = streaming.BLOCK_SECONDS,
    ):
        """Loads `workdir/config.json` and the best-validation checkpoint.

        Args:
          workdir: a training run's folder, or its gs:// URL.
          batch_size: windows per model call.
          hop_frames: frames between window starts of a long clip (None: half a window).
          block_seconds: of a file's audio decoded at a time (bounds memory, not the result).

        Raises:
          runs.RunError: the run cannot be served (missing, untrained, mismatched checkpoint).
          ValueError: a non-positive `batch_size` or `hop_frames`.
        """
        self.config = runs.load_config(workdir)
        self.feature_params = runs.feature_params(self.config)
        self.class_names = tuple(self.config.data.class_names)
        self.num_frames = int(self.config.data.num_frames)
        if batch_size < 1:
            raise ValueError(f"need batch_size >= 1, got {batch_size}")
        if hop_frames is None:
            hop_frames = windows.default_hop(self.num_frames)
        self.windowing = windows.Windowing(self.num_frames, hop_frames)
        self.hop_frames = self.windowing.hop_frames
        self.batch_size = batch_size
        self.block_seconds = block_seconds
        # As the run was trained (training_band: the statistics in its normalization.json).
        self.normalization = normalization.load(self.config, workdir)
        self.variables, self.best = runs.load_best_variables(workdir, self.config)
        self._serving_variables = models.fold_batch_norm(self.variables)
        # Fitted on the validation split when the run was trained (1.0: none).
        self.temperature = calibration.load_temperature(workdir, self.best["step"])
        model = models.create_model(self.config, serving=True)
        self._apply = jax.jit(lambda variables, mel: model.apply(variables, mel, train=False))

    def model_input(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """Normalized log-Mel `(n_mels, frames)` float32 of a clip, as the training data's.

        Args:
          waveform: `(samples,)` or `(samples, channels)` floats in [-1, 1].
          sample_rate: of `waveform`, in Hz.

        Raises:
          features.AudioError: empty, non-finite, silent or too short (as in data preparation).
        """
        mel = self.stored_mel(waveform, sample_rate)[0]
        return features.normalize(mel, self.normalization.statistics(mel))

    def stored_mel(self, waveform: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
        """The float16 log-Mel of a clip, as the prepared datasets store it, and its samples."""
        clip = features.conform(waveform, sample_rate, self.feature_params)
        mel = features.log_mel(clip.waveform, self.feature_params)
        return mel.astype(features.STORED_DTYPE), len(clip.waveform)

    def window_starts(self, frames: int) -> list[int]:
        """The first frame of each window of a clip of `frames` frames (see the module)."""
        return self.windowing.starts(frames)

    def windows(self, mel: np.ndarray) -> np.ndarray:
        """`(n, n_mels, num_frames)` windows of a normalized log-Mel, as described in the module."""
        return np.stack(list(self.windowing.windows(mel, (0.0, 1.0))))

    def window_logits(self, windows: Iterable[np.ndarray]) -> np.ndarray:
        """The model's logits `(n, num_classes)` for `n` windows `(n_mels, num_frames)`.

        Args:
          windows: an array `(n, n_mels, num_frames)` or an iterator of windows.
        """
        out, batch = [], []
        for window in windows:
            batch.append(window)
            if len(batch) == self.batch_size:
                out.append(self._logits(np.stack(batch)))
                batch = []
        if batch:
            out.append(self._logits(np.stack(batch)))
        return np.concatenate(out)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        real = len(batch)
        padded = np.zeros((self.batch_size, *batch.shape[1:]), np.float32)
        padded[:real] = batch
        return np.asarray(self._apply(self._serving_variables, padded))[:real]

    def predict(self, waveform: np.ndarray, sample_rate: int) -> Prediction:
        """The emotion of one clip (any rate, mono or `(samples, channels)`, any length).

        Raises:
          features.AudioError: a clip that data preparation would also have rejected.
        """
        mel, samples = self.stored_mel(waveform, sample_rate)
        windows = self.windowing.windows(mel, self.normalization.statistics(mel))
        return self.prediction(self.window_logits(windows), self._seconds(samples))

    def timeline(
        self,
        source: str | np.ndarray,
        sample_rate: int | None = None,
        params: timeline.TimelineParams | None = None,
    ) -> timeline.Timeline:
        """The emotion over time of a file (decoded in blocks) or a waveform at `sample_rate`:
        `emohrnet_jax.timeline.score` with `params` (None: `TimelineParams()`)."""
        return timeline.score(self, source, sample_rate, params or timeline.TimelineParams())

    # A string: in the class body `timeline` is now the method above.
    def stream(
        self, sample_rate: int, channels: int = 1, params: "timeline.TimelineParams | None" = None
    ) -> live.Stream:
        """A `stream.Stream` scoring windows of live audio as its chunks arrive."""
        return live.Stream(self, sample_rate, channels, params or timeline.TimelineParams())

    def prediction(self, window_logits: np.ndarray, seconds: float) -> Prediction:
        """The clip's `Prediction` from its windows' logits (at the run's temperature)."""
        logits = windows.clip_logits(window_logits)
        probabilities = windows.softmax(logits, self.temperature)
        return Prediction(
            label=self.class_names[int(np.argmax(logits))],
            probabilities={
                name: float(p) for name, p in zip(self.class_names, probabilities, strict=True)
            },
            logits=logits.astype(np.float32),
            windows=len(window_logits),
            seconds=seconds,
        )

    def _seconds(self, samples: int) -> float:
        return samples / self.feature_params.sample_rate

    def file_mel(self, path: str) -> tuple[np.ndarray, tuple, float] | features.AudioError:
        """A file's stored-dtype log-Mel, its normalization statistics and its seconds."""
        try:
            loaded = streaming.file_log_mel(path, self.feature_params, self.block_seconds)
        except features.AudioError as error:
            return error
        statistics = self.normalization.statistics(loaded.mel)
        return loaded.mel, statistics, self._seconds(loaded.samples)

    def predict_files(
        self, paths: Sequence[str], workers: int = 0
    ) -> Iterator[tuple[str, Prediction | features.AudioError]]:
        """`(path, prediction or the reason it failed)` for each file, in order.

        Batches are filled with windows of consecutive files, so many short files run as fast as
        one long one; `workers` threads decode and make features ahead of the model (0: none).
        """
        waiting: collections.deque[_Pending] = collections.deque()
        batch: list[tuple[_Pending, np.ndarray]] = []
        for path, loaded in zip(paths, read_ahead(self.file_mel, paths, workers), strict=True):
            if isinstance(loaded, features.AudioError):
                waiting.append(_Pending(path, seconds=0.0, needed=0, error=loaded))
                yield from self._finished(waiting)
                continue
            mel, statistics, seconds = loaded
            item = _Pending(path, seconds=seconds, needed=len(self.window_starts(mel.shape[1])))
            waiting.append(item)
            for window in self.windowing.windows(mel, statistics):
                batch.append((item, window))
                if len(batch) == self.batch_size:
                    self._run(batch)
                    batch = []
                    yield from self._finished(waiting)
        if batch:
            self._run(batch)
        yield from self._finished(waiting)

    def _run(self, entries: list[tuple["_Pending", np.ndarray]]) -> None:
        logits = self._logits(np.stack([window for _, window in entries]))
        for (item, _), row in zip(entries, logits, strict=True):
            item.logits.append(row)

    def _finished(self, waiting: collections.deque) -> Iterator[tuple[str, Any]]:
        while waiting and len(waiting[0].logits) == waiting[0].needed:
            item = waiting.popleft()
            if item.error is not None:
                yield item.path, item.error
            else:
                yield item.path, self.prediction(np.stack(item.logits), item.seconds)


@dataclasses.dataclass
class _Pending:
    """A file whose windows are queued for the model."""

    path: str
    seconds: float
    needed: int
    error: features.AudioError | None = None
    logits: list[np.ndarray] = dataclasses.field(default_factory=list)


def _define_flags() -> None:
    # Defined only when run as a script, so that tests can import this module beside others.
    flags.DEFINE_string(
        "workdir", None, "Training run folder or gs:// URL (config.json, checkpoints/)."
    )
    flags.DEFINE_string(
        "output",
        None,
        "Write here (a file or gs:// object; atomically, once every file is done) instead of to "
        "stdout.",
    )
    flags.DEFINE_enum(
        "format", "jsonl", ["jsonl", "csv", "rttm"], "JSON lines, CSV (a header row), RTTM."
    )
    timeline_output.define_flags()
    flags.DEFINE_integer(
        "top_k",
        0,
        "JSON: add a `top_k` list of the k most probable classes. CSV: show only the k most "
        "probable classes (top_i, probability_i columns) instead of a column per class. 0: off.",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "batch_size", 64, "Windows per model call (one compiled shape).", lower_bound=1
    )
    flags.DEFINE_integer(
        "hop_frames",
        0,
        "Frames between the windows of a clip longer than the training crop (their logits are "
        "averaged). 0: half a window.",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "workers",
        min(8, os.cpu_count() or 1),
        "Threads decoding audio ahead of the model (0: none).",
        lower_bound=0,
    )
    cli.define_compilation_cache_flag()
    flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> int:
    """The command line: scores the files and folders of `argv[1:]`; returns the exit status."""
    options = flags.FLAGS
    if not options["verbosity"].present:  # orbax's INFO lines would bury what this prints.
        logging.set_verbosity(logging.WARNING)
    cli.quiet_console()
    if len(argv) < 2:
        raise app.UsageError("name at least one audio file or folder")
    storage.configure()
    try:
        workdir = paths.location(options.workdir, "--workdir")
        output = paths.location(options.output, "--output")
        inputs = [paths.location(argument, "input") for argument in argv[1:]]
        if output:  # before the run is loaded: a missing bucket fails in seconds
            check_output(output)
        timeline_output.check_flags(options)
    except (ValueError, OSError) as error:  # PathError is a ValueError, StorageError an OSError.
        sys.exit(f"predict: {error}")
    compilation_cache.enable(options.compilation_cache)
    try:
        predictor = Predictor(
            workdir, batch_size=options.batch_size, hop_frames=options.hop_frames or None
        )
    except runs.RunError as error:
        sys.exit(f"predict: {error}")
    audio_files = audio_paths(inputs)
    if not audio_files:
        sys.exit(f"predict: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {inputs}")
    write = functools.partial(
        write_predictions,
        predictor,
        audio_files,
        output_format=options.format,
        top_k=options.top_k,
        workers=options.workers,
    )
    if options.timeline:
        write = timeline_output.writer(predictor, audio_files, options)
    try:
        failed = write_file(write, output) if output else write_stdout(write)
    except OSError as error:  # the upload of a gs:// --output
        sys.exit(f"predict: cannot write --output={output}: {error}")
    if failed is None:
        return EXIT_BROKEN_PIPE
    if failed:
        print(f"predict: {failed} of {len(audio_files)} files could not be scored", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
