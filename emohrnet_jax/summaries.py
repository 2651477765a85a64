"""The run's TensorBoard events (clu's writer), uploaded after each flush for a gs:// run.

The events of a gs:// run are written to its local mirror and uploaded (see storage): clu writes
through TensorFlow, whose GCS client cannot be pointed at another endpoint.
"""

import os
from collections.abc import Mapping

from clu import metric_writers

from emohrnet_jax import storage

_EVENTS_PREFIX = "events.out.tfevents."


class EventWriter:
    """Scalars to TensorBoard event files in the workdir (and the log); `flush` makes them visible.

    Args:
      workdir: the run's folder or gs:// URL.
      just_logging: log the scalars only, with no event file (the hosts other than process 0).
    """

    def __init__(self, workdir: str, just_logging: bool):
        self._url = workdir if storage.is_url(workdir) and not just_logging else None
        self._logdir = storage.local_mirror(workdir) if self._url else workdir
        self._writer = metric_writers.create_default_writer(self._logdir, just_logging=just_logging)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self._writer.write_scalars(step, scalars)

    def flush(self) -> None:
        self._writer.flush()
        if self._url:
            events = [n for n in os.listdir(self._logdir) if n.startswith(_EVENTS_PREFIX)]
            storage.upload_files(self._logdir, self._url, events)
