"""Stage functions for the supervisor tests (imported by module path inside spawned processes)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from pipeline.camera_state import STATUS_PREFIX, CameraState
from pipeline.stage import PermanentStageError, StageContext


def _folder(ctx: StageContext) -> Path:
    assert ctx.config.runtime.ipc_dir is not None
    return Path(ctx.config.runtime.ipc_dir)


def _record_pid(ctx: StageContext) -> None:
    (_folder(ctx) / f"pid-{ctx.spec.instance}-{os.getpid()}").touch()


def done_then_wait(ctx: StageContext) -> None:
    _record_pid(ctx)
    ctx.report("camera-done", None, ctx.spec.camera)
    ctx.stop_event.wait()


def crash_once(ctx: StageContext) -> None:
    _record_pid(ctx)
    marker = _folder(ctx) / f"crashed-{ctx.spec.instance}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("simulated crash")
    done_then_wait(ctx)


def always_crash(ctx: StageContext) -> None:
    _record_pid(ctx)
    raise RuntimeError("simulated crash")


def fail_for_good(ctx: StageContext) -> None:
    raise PermanentStageError("model file /nope/model.weights not found")


def fail_after_its_camera_is_done(ctx: StageContext) -> None:
    """A decoder whose source broke: it reports the camera failed, its end of stream gets through
    (the camera is done), and it is still closing its sockets when the run ends."""
    ctx.report(STATUS_PREFIX + CameraState.FAILED.value, "clip.mp4: unreadable after 9.8 s", ctx.spec.camera)
    ctx.report("camera-done", None, ctx.spec.camera)
    time.sleep(1.0)  # a send linger, or a slow exit in the idle scheduling class
    raise PermanentStageError("clip.mp4: unreadable after 9.8 s")


def wait_for_stop(ctx: StageContext) -> None:
    _record_pid(ctx)
    ctx.report("ready")  # nothing to load
    ctx.stop_event.wait()


def ignore_sigterm(ctx: StageContext) -> None:
    _record_pid(ctx)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        signal.pause()


def hang_once(ctx: StageContext) -> None:
    """Its main loop turns once, then blocks for good (the heartbeat thread is still alive)."""
    _record_pid(ctx)
    marker = _folder(ctx) / f"hung-{ctx.spec.instance}"
    if marker.exists():
        done_then_wait(ctx)
        return
    marker.touch()
    ctx.beat()
    time.sleep(3600)


def record_environment(ctx: StageContext) -> None:
    """Writes the threading environment the stage process was given, then ends its camera."""
    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "CUDA_VISIBLE_DEVICES")
    (_folder(ctx) / f"env-{ctx.config.runtime.mode}").write_text(
        "\n".join(f"{name}={os.environ.get(name, '')}" for name in names)
    )
    ctx.report("camera-done", None, ctx.spec.camera)
    ctx.stop_event.wait()


def _stamp(ctx: StageContext, what: str) -> None:
    (_folder(ctx) / f"at-{what}-{ctx.spec.instance}").write_text(repr(time.time()))


def ready_after_a_while(ctx: StageContext) -> None:
    """A stage loading a model for 1.5 s (heartbeats go on meanwhile) before it reports ready."""
    time.sleep(1.5)
    _stamp(ctx, "ready")
    ctx.report("ready")
    ctx.stop_event.wait()


def never_ready(ctx: StageContext) -> None:
    ctx.stop_event.wait()


def camera_started(ctx: StageContext) -> None:
    if not ctx.wait_to_start():
        return
    _stamp(ctx, "start")
    ctx.report("camera-done", None, ctx.spec.camera)
    ctx.stop_event.wait()


def record_scheduling(ctx: StageContext) -> None:
    """Writes the niceness and scheduling class (idle or not) the stage process and its heartbeat
    thread run in; a decoder then ends its camera once the others are ready."""
    seen: list[str] = []
    probe = threading.Thread(target=lambda: seen.append(str(os.sched_getscheduler(0) == os.SCHED_IDLE)))
    probe.start()
    probe.join()
    idle = os.sched_getscheduler(0) == os.SCHED_IDLE
    (_folder(ctx) / f"sched-{ctx.spec.instance}").write_text(f"{os.nice(0)} {idle} {seen[0]}")
    if ctx.spec.camera is not None and ctx.wait_to_start():
        ctx.report("camera-done", None, ctx.spec.camera)
    ctx.report("ready")
    ctx.stop_event.wait()
