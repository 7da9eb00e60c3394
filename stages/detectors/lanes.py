"""Batch parallelism on a CPU: several copies of a detector, each running its own batch on its own
thread with one compute thread, results handed back in the order the batches were given.

A model run split over threads (intra-op) waits at every layer for the slowest thread: on a busy
machine, a thread that loses its core for a moment holds up all the others. Copies that each run a
whole batch on one thread never wait for one another, so every core the detector gets goes into
the model (on the 2-core development machine: 27-28 against 24-27 frames/s for YOLOv3-tiny at
batch 4, and more of that kept beside decode and transcribe). Each batch takes longer, which is
why live cameras keep intra-op (``stages.detect.parallelism``).

OpenCV and torch release the GIL while a model runs, so Python threads are enough; the compute
libraries' own thread counts are process-wide, so every copy runs with one thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipeline.config import DetectConfig
from pipeline.messages import Box
from stages.detectors.base import Detector, create_detector


def model_copies(settings: DetectConfig, count: int) -> list[Detector]:
    """``count`` copies of the configured detector, each running on one thread: the lanes' models
    (the stage's and the bench's alike)."""
    return [create_detector(settings.model_copy(update={"threads": 1})) for _ in range(count)]


@dataclass(frozen=True)
class LaneResult:
    """One batch's boxes (one list per image) and when and for how long its model ran."""

    boxes: list[list[Box]]
    began: float  # time.perf_counter() when the model started on the batch
    began_wall: float  # time.time() then
    run_s: float


class DetectorLanes:
    """``len(detectors)`` lanes: ``submit`` hands a batch to the next free copy; each batch's
    ``deliver`` runs in submission order, one at a time, on a lane's thread (so it may send on a
    socket the caller no longer touches). At most one batch per lane, plus one, is in flight:
    ``submit`` waits for a place (``wait_s`` at most; False when none came). A lane's exception is
    raised by the next ``submit``, ``drain`` or ``check``; later batches are then not run."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        if not detectors:
            raise ValueError("DetectorLanes needs at least one detector")
        self.names = detectors[0].names
        self.count = len(detectors)
        self._free: queue.SimpleQueue[Detector] = queue.SimpleQueue()
        for detector in detectors:
            self._free.put(detector)
        self._places = threading.Semaphore(self.count + 1)  # a batch ready for the lane that frees up next
        self._turn = threading.Condition()
        self._next_ticket = 0  # submitted so far
        self._delivered = 0  # tickets delivered so far
        self._error: BaseException | None = None
        self._ended: dict[int, float] = {}  # per copy: when its latest batch ended
        self._idle_lock = threading.Lock()
        self.idle_s = 0.0  # lanes waiting for a batch between two of theirs, summed over the lanes
        self._pool = ThreadPoolExecutor(max_workers=self.count + 1, thread_name_prefix="detect-lane")

    def submit(
        self, images: Sequence[np.ndarray], deliver: Callable[[LaneResult | None], object], wait_s: float = 0.1
    ) -> bool:
        """Run ``images`` (none: only ``deliver(None)``, in its turn) on the next free copy."""
        self.check()
        if not self._places.acquire(timeout=wait_s):
            self.check()
            return False
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pool.submit(self._run, ticket, list(images), deliver)
        return True

    def drain(self, wait_s: float | None = None) -> bool:
        """Wait until every submitted batch is delivered (at most ``wait_s``); True when they are."""
        with self._turn:
            done = self._turn.wait_for(lambda: self._delivered == self._next_ticket or self._error is not None, wait_s)
        self.check()
        return bool(done)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Box]]:
        """One batch, waited for (the ``Detector`` interface: warm-ups, tests)."""
        detector = self._free.get()
        try:
            return detector.detect(images)
        finally:
            self._free.put(detector)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, ticket: int, images: list[np.ndarray], deliver: Callable[[LaneResult | None], object]) -> None:
        try:
            failure: BaseException | None = None
            result: LaneResult | None = None
            try:
                if images and self._error is None:
                    result = self._detect(images)
            except BaseException as exc:  # handed to the caller's thread
                failure = exc
            with self._turn:
                self._turn.wait_for(lambda: self._delivered == ticket)
                try:
                    if failure is not None:
                        self._error = self._error or failure
                    elif self._error is None:
                        deliver(result)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = self._error or exc
                finally:
                    self._delivered += 1
                    self._turn.notify_all()
        finally:
            self._places.release()

    def _detect(self, images: list[np.ndarray]) -> LaneResult:
        detector = self._free.get()
        began, began_wall = time.perf_counter(), time.time()
        try:
            boxes = detector.detect(images)
            return LaneResult(boxes, began, began_wall, time.perf_counter() - began)
        finally:
            with self._idle_lock:
                ended = self._ended.get(id(detector))
                if ended is not None:
                    self.idle_s += began - ended
                self._ended[id(detector)] = time.perf_counter()
            self._free.put(detector)

    def check(self) -> None:
        """Raise the exception a lane met, if any (``submit`` and ``drain`` do too)."""
        if self._error is not None:
            raise self._error
