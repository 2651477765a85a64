"""The service's model worker: the windows of every waiting request scored together in batches.

Requests hand in their windows and wait on a future; one thread takes windows from the waiting
requests in arrival order, `batch_size` at a time (the Predictor's one compiled shape), so that
concurrent short clips share a model call instead of each padding a batch of its own.
"""

import collections
import concurrent.futures
import dataclasses
import queue
import threading
import time
from collections.abc import Callable

import numpy as np
from absl import logging


@dataclasses.dataclass
class _Job:
    """One request's windows and the logits scored so far."""

    windows: np.ndarray  # `(n, n_mels, num_frames)`
    future: concurrent.futures.Future
    logits: list[np.ndarray] = dataclasses.field(default_factory=list)
    taken: int = 0  # windows handed to the model so far

    def remaining(self) -> int:
        return len(self.windows) - self.taken


@dataclasses.dataclass
class BatchStats:
    """What the worker has done, for /health and the tests."""

    batches: int = 0  # model calls
    windows: int = 0  # windows scored
    requests: int = 0  # requests answered
    shared_batches: int = 0  # model calls holding the windows of more than one request


class BatchScorer:
    """Scores the windows of concurrent requests in shared batches, on one worker thread."""

    def __init__(
        self,
        score: Callable[[np.ndarray], np.ndarray],
        batch_size: int,
        wait_seconds: float = 0.005,
    ):
        """Starts the worker.

        Args:
          score: logits `(n, num_classes)` of `n <= batch_size` windows (one model call).
          batch_size: windows per call.
          wait_seconds: how long a batch that is not full waits for other requests' windows.
        """
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.stats = BatchStats()
        self._score = score
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="emohrnet-scorer", daemon=True)
        self._thread.start()

    def submit(self, windows: np.ndarray) -> concurrent.futures.Future:
        """A future of the logits `(n, num_classes)` of `windows` `(n, n_mels, num_frames)`."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        if len(windows) == 0:
            future.set_exception(ValueError("no windows to score"))
            return future
        self._queue.put(_Job(windows, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Stops the worker once the requests already handed in are scored."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        waiting: collections.deque[_Job] = collections.deque()
        closing = False
        while not (closing and not waiting):
            if not waiting:
                job = self._queue.get()
                if job is None:
                    return
                waiting.append(job)
            closing = self._gather(waiting, time.monotonic() + self.wait_seconds) or closing
            self._run(waiting)

    def _gather(self, waiting: collections.deque, deadline: float) -> bool:
        """Adds the requests that arrive before the batch is full or `deadline`; True: closing."""
        while sum(job.remaining() for job in waiting) < self.batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if job is None:
                return True
            waiting.append(job)
        return False

    def _run(self, waiting: collections.deque) -> None:
        """Scores one batch from the front of `waiting`; answers the requests it completes."""
        parts = []
        for job in waiting:
            count = min(job.remaining(), self.batch_size - sum(len(rows) for _, rows in parts))
            if count == 0:
                break
            parts.append((job, job.windows[job.taken : job.taken + count]))
            job.taken += count
        try:
            logits = self._score(np.concatenate([rows for _, rows in parts]))
        except Exception as error:  # a request's answer, not the worker's end
            for job, _ in parts:
                job.future.set_exception(error)
                waiting.remove(job)
            return
        self.stats.batches += 1
        self.stats.windows += len(logits)
        self.stats.shared_batches += len(parts) > 1
        start = 0
        for job, rows in parts:
            job.logits.append(logits[start : start + len(rows)])
            start += len(rows)
        logging.debug("scored %d windows of %d requests", len(logits), len(parts))
        while waiting and waiting[0].remaining() == 0:
            job = waiting.popleft()
            self.stats.requests += 1
            job.future.set_result(np.concatenate(job.logits))
