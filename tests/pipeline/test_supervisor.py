from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.config import VigilConfig
from pipeline.stage import StageSpec
from pipeline.stage_specs import build_specs
from pipeline.supervisor import Supervisor
from pipeline.transport import Endpoints

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def config_for(tmp_path: Path, cameras: tuple[str, ...] = ("c1",), **runtime: object) -> VigilConfig:
    return VigilConfig.model_validate(
        {
            "cameras": {cam: {"source": f"{cam}.mp4"} for cam in cameras},  # the stage targets never open it
            "runtime": {"ipc_dir": str(tmp_path), "max_restarts": 3, **runtime},
        }
    )


def spec(tmp_path: Path, target: str, camera: str | None = "c1", name: str = "decode") -> StageSpec:
    return StageSpec(
        name=name,
        instance=f"{name}:{camera}" if camera else name,
        target=f"tests.pipeline.stage_targets:{target}",
        device="cpu",
        threads=1,
        cpus=None,
        endpoints=Endpoints.in_folder(tmp_path),
        camera=camera,
    )


def pids(tmp_path: Path) -> list[int]:
    return [int(p.name.rsplit("-", 1)[1]) for p in tmp_path.glob("pid-*")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_specs_have_one_decoder_per_camera_and_one_of_each_other_stage(tmp_path):
    config = config_for(tmp_path, ("a", "b"))
    names = [s.instance for s in build_specs(config, Endpoints.in_folder(tmp_path))]
    assert names == ["alert", "fuse", "detect", "transcribe", "decode:a", "decode:b"]


def test_crashed_stage_is_restarted_and_the_run_succeeds(tmp_path):
    supervisor = Supervisor(config_for(tmp_path), specs=[spec(tmp_path, "crash_once")])
    summary = supervisor.run()
    assert summary.exit_code == 0
    assert supervisor.stages[0].restarts == 1
    assert len(pids(tmp_path)) == 2  # first attempt and the restart


def test_stage_crashing_every_time_fails_for_good_with_non_zero_exit(tmp_path):
    config = config_for(tmp_path, max_restarts=2)
    supervisor = Supervisor(config, specs=[spec(tmp_path, "always_crash")])
    supervisor.end_grace_s = 1.0  # it never sends an end of stream
    summary = supervisor.run()
    assert summary.exit_code == 1
    assert "crashed 3 times" in summary.failed["decode:c1"]
    assert len(pids(tmp_path)) == 3


def test_permanent_failure_is_not_restarted_and_other_cameras_finish(tmp_path):
    config = config_for(tmp_path, ("bad", "good"))
    specs = [spec(tmp_path, "fail_for_good", "bad"), spec(tmp_path, "done_then_wait", "good")]
    supervisor = Supervisor(config, specs=specs)
    supervisor.end_grace_s = 1.0  # "bad" never sends its end of stream
    summary = supervisor.run()
    assert summary.exit_code == 1
    assert summary.failed == {"decode:bad": "model file /nope/model.weights not found"}
    assert summary.cameras_done == {"bad", "good"}
    assert supervisor.stages[0].restarts == 0


def test_a_camera_that_failed_fails_the_run_even_when_the_run_ends_before_its_decoder_exits(tmp_path):
    supervisor = Supervisor(config_for(tmp_path), specs=[spec(tmp_path, "fail_after_its_camera_is_done")])
    summary = supervisor.run()
    assert summary.camera_errors == {"c1": "clip.mp4: unreadable after 9.8 s"}
    assert summary.failed == {"decode:c1": "clip.mp4: unreadable after 9.8 s"}
    assert summary.exit_code == 1


def test_frozen_stage_without_heartbeat_is_killed_and_restarted(tmp_path):
    config = config_for(tmp_path, ("c1", "c2"), heartbeat_timeout_s=2.0)
    specs = [spec(tmp_path, "wait_for_stop", "c1"), spec(tmp_path, "crash_once", "c2")]
    supervisor = Supervisor(config, specs=specs)
    frozen: list[int] = []

    def freeze_first_decoder(sup: Supervisor) -> None:
        process = sup.stages[0].process
        if not frozen and process is not None and process.pid and time.monotonic() - sup.started_at > 1.5:
            frozen.append(process.pid)
            os.kill(process.pid, signal.SIGSTOP)
        if sup.stages[0].restarts:
            sup.cameras_done.add("c1")  # end the run once the restart happened

    supervisor._on_tick = freeze_first_decoder
    supervisor.run()
    assert frozen and supervisor.stages[0].restarts == 1
    assert not alive(frozen[0])


SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path[:0] = [{root!r}]
    from pipeline.config import VigilConfig
    from pipeline.supervisor import Supervisor
    from tests.pipeline.test_supervisor import config_for, spec
    tmp = Path({tmp!r})
    config = config_for(tmp, ("c1", "c2"), stop_timeout_s=3.0)
    specs = [spec(tmp, "wait_for_stop", "c1"), spec(tmp, "ignore_sigterm", "c2")]
    specs.append(spec(tmp, "wait_for_stop", None, "fuse"))
    print("started", flush=True)
    sys.exit(Supervisor(config, specs=specs).run().exit_code)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_every_stage_within_ten_seconds(tmp_path, signum):
    script = SCRIPT.format(here=str(HERE), root=str(ROOT), tmp=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while len(pids(tmp_path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids(tmp_path)) == 3
    began = time.monotonic()
    process.send_signal(signum)
    code = process.wait(timeout=15)
    assert time.monotonic() - began < 10
    assert code == 0
    assert not [pid for pid in pids(tmp_path) if alive(pid)], "a stage process was left behind"


def test_stage_whose_main_loop_hangs_is_restarted(tmp_path):
    config = config_for(tmp_path, heartbeat_timeout_s=2.0)
    supervisor = Supervisor(config, specs=[spec(tmp_path, "hang_once")])
    summary = supervisor.run()
    assert summary.exit_code == 0
    assert supervisor.stages[0].restarts == 1
    assert len(pids(tmp_path)) == 2, "the hung process and its replacement"
    assert not any(alive(pid) for pid in pids(tmp_path))


def test_live_stages_wait_passively_for_openmp_work_and_fast_replay_keeps_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for mode in ("realtime", "fast"):
        Supervisor(config_for(tmp_path, mode=mode), specs=[spec(tmp_path, "record_environment")]).run()
    realtime = (tmp_path / "env-realtime").read_text().splitlines()
    fast = (tmp_path / "env-fast").read_text().splitlines()
    assert "OMP_WAIT_POLICY=PASSIVE" in realtime and "OMP_NUM_THREADS=1" in realtime
    assert "OMP_WAIT_POLICY=" in fast


def started_at(tmp_path: Path, what: str, instance: str) -> float:
    return float((tmp_path / f"at-{what}-{instance}").read_text())


def test_cameras_start_only_once_the_other_stages_are_ready(tmp_path, caplog):
    config = config_for(tmp_path, ("c1", "c2"))
    specs = [spec(tmp_path, "ready_after_a_while", None, "detect"), spec(tmp_path, "ready_after_a_while", None, "fuse")]
    specs += [spec(tmp_path, "camera_started", camera) for camera in ("c1", "c2")]
    with caplog.at_level(logging.INFO, logger="pipeline.supervisor"):
        summary = Supervisor(config, specs=specs).run()
    assert summary.exit_code == 0
    ready = max(started_at(tmp_path, "ready", name) for name in ("detect", "fuse"))
    assert all(started_at(tmp_path, "start", f"decode:{c}") >= ready for c in ("c1", "c2"))
    assert "starting 2 camera(s)" in caplog.text


def test_cameras_start_anyway_when_a_stage_never_gets_ready(tmp_path, caplog):
    config = config_for(tmp_path, ("c1",), cameras_wait_s=1.0)
    specs = [spec(tmp_path, "never_ready", None, "transcribe"), spec(tmp_path, "camera_started", "c1")]
    began = time.time()
    with caplog.at_level(logging.WARNING, logger="pipeline.supervisor"):
        summary = Supervisor(config, specs=specs).run()
    assert summary.exit_code == 0
    assert started_at(tmp_path, "start", "decode:c1") >= began + 1.0
    assert "starting the cameras although transcribe not ready after 1 s" in caplog.text


def test_cameras_wait_of_zero_starts_them_with_everything_else(tmp_path, caplog):
    config = config_for(tmp_path, ("c1",), cameras_wait_s=0)
    specs = [spec(tmp_path, "never_ready", None, "transcribe"), spec(tmp_path, "camera_started", "c1")]
    supervisor = Supervisor(config, specs=specs)
    assert not any(stage.held for stage in supervisor.stages)
    with caplog.at_level(logging.INFO, logger="pipeline.supervisor"):
        assert supervisor.run().exit_code == 0
    assert "starting the cameras" not in caplog.text and "camera(s)" not in caplog.text


def scheduling_of_each_stage(folder: Path, mode: str, stages: dict[str, object]) -> dict[str, tuple[int, str]]:
    """Runs every stage of a one-camera config as ``record_scheduling``; per stage, its niceness above
    this process's and its scheduling class (a thread it starts included)."""
    folder.mkdir()
    config = VigilConfig.model_validate(
        {"cameras": {"c1": {"source": "c1.mp4"}}, "stages": stages, "runtime": {"ipc_dir": str(folder), "mode": mode}}
    )
    target = "tests.pipeline.stage_targets:record_scheduling"
    specs = [dataclasses.replace(s, target=target) for s in build_specs(config, Endpoints.in_folder(folder))]
    assert Supervisor(config, specs=specs).run().exit_code == 0
    seen = {}
    for path in folder.glob("sched-*"):
        nice, idle, thread_idle = path.read_text().split()
        assert idle == thread_idle, f"{path.name}: a thread the stage starts runs in another class"
        seen[path.name.removeprefix("sched-")] = (int(nice) - os.nice(0), "idle" if idle == "True" else "normal")
    return seen


def test_fast_replay_runs_the_stages_beside_the_detector_in_the_idle_class(tmp_path):
    assert scheduling_of_each_stage(tmp_path / "fast", "fast", {}) == {
        "decode:c1": (0, "idle"),
        "detect": (0, "normal"),
        "transcribe": (0, "idle"),
        "fuse": (0, "idle"),
        "alert": (0, "idle"),
    }
    realtime = scheduling_of_each_stage(tmp_path / "realtime", "realtime", {})
    assert realtime == dict.fromkeys(["decode:c1", "detect", "transcribe", "fuse", "alert"], (0, "normal"))


def test_a_stage_nice_or_scheduler_setting_wins_over_the_default(tmp_path):
    chosen = scheduling_of_each_stage(
        tmp_path / "own", "fast", {"decode": {"nice": 3}, "detect": {"nice": 2}, "fuse": {"scheduler": "normal"}}
    )
    assert chosen == {
        "decode:c1": (3, "normal"),
        "detect": (2, "normal"),
        "transcribe": (0, "idle"),
        "fuse": (0, "normal"),
        "alert": (0, "idle"),
    }
    live = scheduling_of_each_stage(tmp_path / "live", "realtime", {"alert": {"scheduler": "idle", "nice": 4}})
    assert live["alert"] == (4, "idle") and live["detect"] == (0, "normal")
