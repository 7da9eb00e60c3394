"""Takes turns on the CPU: detect and transcribe run their models one at a time on a small machine.

Both libraries split each model run over several threads and wait for the slowest one. When the
two stages' threads together outnumber the cores, a model run shares a core with the other stage's
threads and takes two to three times as long: detection latency doubles whenever someone speaks.
Taking turns (one run at a time, each with every core) keeps each run as fast as it is alone; the
detector then skips the frames that waited (see ``stages.detect``), and a transcription waits for
at most one detection.

The lock is an ``flock`` on a file in the supervisor's private folder, so only stages of one host
(one supervisor) share it. ``runtime.compute_lock`` decides when it is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.config import VigilConfig
from pipeline.stage_settings import usable_cores


@dataclass
class ComputeLock:
    """``with lock.turn(): ...`` runs the block while no other stage's model runs; ``path`` None: no lock."""

    path: str | None
    waited_s: float = 0.0  # time spent waiting for a turn, in total
    _fd: int | None = field(default=None, repr=False)

    def _open(self) -> int:
        if self._fd is None:
            assert self.path is not None
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        fd = self._open()
        began = time.perf_counter()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.waited_s += time.perf_counter() - began
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def uses_compute_lock(config: VigilConfig, cores: int | None = None) -> bool:
    """Whether detect and transcribe take turns (``runtime.compute_lock``; see the module docstring):
    with ``auto``, when both run on the CPU, one process each, with more threads together than
    ``cores`` (this process's usable cores by default). Replicas, and the model copies of batch
    parallelism (``stages.detect.parallelism``), are meant to run side by side, and a GPU stage
    takes no cores."""
    choice = config.runtime.compute_lock
    if choice != "auto":
        return choice == "on"
    detect, transcribe = config.stages.detect, config.stages.transcribe
    on_cpu = detect.device == "cpu" and transcribe.device == "cpu"
    single = detect.replicas == 1 and transcribe.replicas == 1 and detect.lanes(config.runtime.mode) == 1
    return on_cpu and single and detect.threads + transcribe.threads > (cores or usable_cores())
