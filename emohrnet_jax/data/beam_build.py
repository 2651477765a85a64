"""Feature extraction on Apache Beam, for corpora that outgrow one machine (the [beam] extra).

A builder given Beam pipeline options (`pipeline_options`) returns `examples`, a `PTransform`,
from its split generator; tfds runs it on the options' runner (DirectRunner with several workers
here, Dataflow, Spark or Flink at scale) and writes the examples. Each utterance's outcome
(`build_summary.outcome`) is combined on Beam into one tally, written beside the examples and read
back by the builder once the pipeline is done (`read_tally`), so the build summary is the same as
a build in worker processes. apache-beam is imported only when a Beam build is asked for.
"""

import argparse
import json
import os
import re
from collections.abc import Callable
from typing import Any

from etils import epath

from emohrnet_jax.data import build_summary, corpora

TALLY_FILE = "beam_tally.json"
_OPTION = re.compile(r"^[a-z][a-z0-9_]*(=.*)?$")


def _beam():
    try:
        import apache_beam
    except ImportError:
        raise ImportError(
            "Beam pipeline options need apache-beam: pip install 'emohrnet-jax[beam]'"
        ) from None
    return apache_beam


def pipeline_options(text: str) -> Any:
    """Beam `PipelineOptions` from `tfds build`'s format: `name=value,...` (`name` for a switch).

    Example: `runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing`.

    Raises:
      ValueError: a malformed item, an option Beam does not define or a value it refuses.
      ImportError: apache-beam is not installed.
    """
    beam = _beam()
    items = text.split(",")
    malformed = [item for item in items if not _OPTION.match(item)]
    if malformed:
        raise ValueError(
            f"malformed Beam pipeline option(s) {malformed} in {text!r}: expected "
            "name=value items separated by commas, e.g. runner=DirectRunner,direct_num_workers=2"
        )
    flags = [f"--{item}" for item in items]
    parsers: list[argparse.ArgumentParser] = []

    def keep_parser(parser: argparse.ArgumentParser) -> None:
        parser.exit_on_error = False  # A bad value raises instead of printing usage and exiting.
        parsers.append(parser)

    options = beam.options.pipeline_options.PipelineOptions(flags=flags)
    try:
        options.get_all_options(add_extra_args_fn=keep_parser)
    except argparse.ArgumentError as error:
        raise ValueError(f"Beam pipeline options {text!r}: {error}") from None
    _, unknown = parsers[0].parse_known_args(flags)
    if unknown:
        names = [flag.removeprefix("--").split("=")[0] for flag in unknown]
        raise ValueError(f"unknown Beam pipeline option(s) {names} in {text!r}")
    return options


def quiet_workers(options: Any) -> None:
    """Keeps the log of Beam's workers to errors (each step at INFO otherwise), unless `options`
    set its level."""
    workers = options.view_as(_beam().options.pipeline_options.WorkerOptions)
    if workers.default_sdk_harness_log_level is None:
        workers.default_sdk_harness_log_level = "ERROR"


def examples(
    jobs: list[tuple[corpora.Utterance, tuple[Any, ...]]],
    extract: Callable[..., dict[str, Any]],
    to_example: Callable[[corpora.Utterance, dict[str, Any]], dict[str, Any]],
    folder: str,
    dataset: str,
) -> Any:
    """The `PTransform` yielding `(id, example)` of each utterance whose features were extracted.

    Args:
      jobs: each utterance with the arguments of `extract` for it.
      extract: `features.extract` or the like: a result dict, with "error" for bad audio.
      to_example: the stored example of an utterance and its result.
      folder: where the tally of the outcomes is written (`read_tally`).
      dataset: the dataset's name, for the error of a build that kept nothing.
    """
    beam = _beam()
    tally_path = os.path.join(folder, TALLY_FILE)

    def expand(pipeline):
        results = (
            pipeline | "Utterances" >> beam.Create(jobs) | "Extract" >> beam.Map(_extract, extract)
        )
        _ = (
            results
            | "Outcomes" >> beam.MapTuple(build_summary.outcome)
            | "Tally" >> beam.CombineGlobally(build_summary.merge)
            | "WriteTally" >> beam.Map(_write_tally, tally_path, dataset)
        )
        return results | "Examples" >> beam.FlatMap(_kept, to_example)

    return beam.ptransform_fn(expand)()


def read_tally(folder: str) -> dict[str, Any]:
    """The merged outcomes written by `examples`' pipeline into `folder`, removed once read."""
    path = epath.Path(folder) / TALLY_FILE
    tally = json.loads(path.read_text())
    path.unlink()
    return tally


# Beam's MapTuple takes no side arguments without defaults: these unpack the pair themselves.
def _extract(utterance_job: tuple[corpora.Utterance, tuple[Any, ...]], extract: Callable) -> tuple:
    utterance, job = utterance_job
    return utterance, extract(*job)


def _kept(utterance_result: tuple[corpora.Utterance, dict[str, Any]], to_example: Callable):
    utterance, result = utterance_result
    if "error" not in result:
        yield utterance.id, to_example(utterance, result)


def _write_tally(merged: dict[str, Any], path: str, dataset: str) -> None:
    if not merged["speakers"]:  # Nothing kept: said here, tfds's own error names no reason.
        raise build_summary.nothing_kept(dataset, merged)
    epath.Path(path).write_text(json.dumps(merged))
