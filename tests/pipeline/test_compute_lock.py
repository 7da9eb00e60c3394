"""detect and transcribe take turns on the CPU: real flock locks, the auto rule, the supervisor's wiring."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from pipeline.compute_lock import ComputeLock, uses_compute_lock
from pipeline.config import VigilConfig
from pipeline.supervisor import Supervisor
from tests.conftest import make_config


def test_turns_never_overlap_and_waiting_is_counted(tmp_path: Path) -> None:
    path = str(tmp_path / "compute.lock")
    turns: list[tuple[float, float]] = []
    locks = [ComputeLock(path), ComputeLock(path)]  # each opens the file itself, as two processes do

    def take_turns(lock: ComputeLock) -> None:
        for _ in range(15):
            with lock.turn():
                began = time.perf_counter()
                time.sleep(0.004)  # a model run
                turns.append((began, time.perf_counter()))

    threads = [threading.Thread(target=take_turns, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ordered = sorted(turns)
    assert len(ordered) == 30
    assert all(end <= next_began for (_, end), (next_began, _) in itertools.pairwise(ordered))
    assert sum(lock.waited_s for lock in locks) > 0, "someone waited for a turn"
    for lock in locks:
        lock.close()


def test_without_a_path_there_is_no_lock() -> None:
    lock = ComputeLock(None)
    with lock.turn(), lock.turn():  # nothing to wait for, even nested
        pass
    assert lock.waited_s == 0


def test_auto_takes_turns_only_when_the_two_stages_oversubscribe_the_cpu(tmp_path: Path) -> None:
    def config(detect: dict[str, object], transcribe: dict[str, object], mode: str = "auto") -> VigilConfig:
        return make_config(
            tmp_path, stages={"detect": detect, "transcribe": transcribe}, runtime={"compute_lock": mode}
        )

    intra = {"threads": 2, "parallelism": "intra-op"}  # one model, each run over both threads
    assert uses_compute_lock(config(intra, {"threads": 2}), cores=2)
    assert not uses_compute_lock(config(intra, {"threads": 2}), cores=8), "enough cores for both"
    assert not uses_compute_lock(config({"threads": 1, "replicas": 2}, {"threads": 2}), cores=2), "replicas"
    assert not uses_compute_lock(config({"threads": 2}, {"threads": 2}), cores=2), "model copies (fast replay)"
    assert not uses_compute_lock(config({"threads": 2, "device": "cuda:0"}, {"threads": 2}), cores=2), "a GPU"
    assert uses_compute_lock(config({"threads": 1}, {"threads": 1}, "on"), cores=8)
    assert not uses_compute_lock(config(intra, {"threads": 2}, "off"), cores=2)


def test_the_supervisor_gives_detect_and_transcribe_one_lock_file(tmp_path: Path) -> None:
    on = Supervisor(make_config(tmp_path, runtime={"compute_lock": "on", "ipc_dir": str(tmp_path)}))
    locks = {stage.spec.name: stage.spec.compute_lock for stage in on.stages}
    assert locks["detect"] is not None and locks["detect"] == locks["transcribe"]
    assert locks["decode"] is None and locks["fuse"] is None and locks["alert"] is None
    off = Supervisor(make_config(tmp_path, runtime={"compute_lock": "off", "ipc_dir": str(tmp_path)}))
    assert all(stage.spec.compute_lock is None for stage in off.stages)
