"""Trains on a Cloud TPU VM or pod slice through `gcloud` (docs/tpu.md walks through it).

  python tools/tpu.py run --name=emo --zone=us-central2-b --accelerator_type=v4-8 -- \\
      --config=configs/iemocap.py --workdir=gs://BUCKET/runs/iemocap_fold0 \\
      --config.data.data_dir=gs://BUCKET/tfds
  python tools/tpu.py logs --name=emo --zone=us-central2-b
  python tools/tpu.py delete --name=emo --zone=us-central2-b

Subcommands: create (the TPU VM, or with --queued a queued resource, waited for), setup (the
committed tree, `git archive HEAD`, copied to and installed on every worker), train (the flags
after `--`, given to `python -m emohrnet_jax.main` on every worker in the background, with
--distributed on a multi-host slice; the workdir must be gs://), logs (follows worker 0's log
until the training ends), delete, and run (create, setup, train, logs). `--dry_run` prints the
commands, shell-quoted, one a line, and runs nothing. The logic is emohrnet_jax/cloud_tpu.py.
Exit status: 0 done, 1 an error (one line).
"""

from absl import app, flags

from emohrnet_jax import cli, cloud_tpu

_NAME = flags.DEFINE_string("name", None, "The TPU VM's (and queued resource's) name.")
_ZONE = flags.DEFINE_string("zone", None, "Its zone, e.g. us-central2-b (v4), us-west4-a (v5e).")
_PROJECT = flags.DEFINE_string("project", None, "Google Cloud project (default: gcloud's).")
_ACCELERATOR_TYPE = flags.DEFINE_string(
    "accelerator_type", None, "v4-8 (1 host), v4-32 (4 hosts), v5litepod-8, v5p-8, v6e-8, ..."
)
_RUNTIME_VERSION = flags.DEFINE_string(
    "runtime_version", "", "TPU software version (default: the generation's JAX one)."
)
_SPOT = flags.DEFINE_bool("spot", False, "A Spot TPU: cheaper, may be preempted (re-run train).")
_QUEUED = flags.DEFINE_bool("queued", False, "Request a queued resource and wait until granted.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the gcloud commands; run nothing.")
flags.mark_flags_as_required(["name", "zone"])

_TAKE_TRAINING_FLAGS = ("train", "run")


def _job(command: str, training_flags: list[str]) -> cloud_tpu.Job:
    if training_flags and command not in _TAKE_TRAINING_FLAGS:
        raise cloud_tpu.LaunchError(f"{command} takes no arguments: {training_flags}")
    accelerator_type = _ACCELERATOR_TYPE.value
    return cloud_tpu.Job(
        name=_NAME.value,
        zone=_ZONE.value,
        slice=cloud_tpu.parse_slice(accelerator_type) if accelerator_type else None,
        train_args=tuple(training_flags),
        project=_PROJECT.value,
        runtime_version=_RUNTIME_VERSION.value,
        spot=_SPOT.value,
        queued=_QUEUED.value,
    )


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in cloud_tpu.STEPS:
        raise app.UsageError(f"the first argument is one of {', '.join(cloud_tpu.STEPS)}")
    command = argv[1]
    try:
        job = _job(command, argv[2:])
        cloud_tpu.execute(job, cloud_tpu.STEPS[command](job), dry_run=_DRY_RUN.value)
    except cloud_tpu.LaunchError as error:
        cli.exit_with(error, f"tpu {command}")
    except KeyboardInterrupt:
        raise SystemExit(f"tpu {command}: interrupted (a started training keeps running)") from None


if __name__ == "__main__":
    app.run(main)
