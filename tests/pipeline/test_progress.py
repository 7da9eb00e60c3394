"""The live display shows one line per camera with its state; the summary says how each camera ended."""

from __future__ import annotations

import io
import time
from pathlib import Path

from pipeline.camera_state import CameraState
from pipeline.progress import ProgressDisplay, format_summary
from pipeline.supervisor import CameraView, RunSummary, Supervisor
from tests.conftest import make_config


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def supervisor_with_cameras(tmp_path: Path, count: int) -> Supervisor:
    config = make_config(tmp_path)
    plaza = config.cameras["plaza"]
    cameras = {f"cam{i}": plaza.model_copy(update={"source": f"rtsp://u:pw@10.0.0.{i}/s"}) for i in range(count)}
    return Supervisor(config.model_copy(update={"cameras": cameras}), specs=[])


def test_a_line_per_camera_is_printed_when_its_state_changes(tmp_path: Path) -> None:
    supervisor = supervisor_with_cameras(tmp_path, 2)
    out = io.StringIO()
    display = ProgressDisplay(out, every_s=3600)
    now = time.monotonic()
    supervisor.camera_states["cam0"] = CameraView(CameraState.STREAMING, "h264 768x576, no audio", now)
    supervisor.camera_states["cam1"] = CameraView(CameraState.BACKING_OFF, "connection refused; retry in 2.0 s", now)
    supervisor.counters["decode:cam1"] = {"frames_sent": 10, "reconnects": 3}
    display(supervisor)
    display(supervisor)  # nothing changed: nothing new printed for the cameras
    supervisor.camera_states["cam1"] = CameraView(CameraState.STREAMING, "h264 768x576, no audio", now)
    display(supervisor)
    lines = out.getvalue().splitlines()
    camera_lines = [line for line in lines if line.startswith("cam")]
    assert len(camera_lines) == 3
    assert "cam1" in camera_lines[1] and "backing off" in camera_lines[1] and "3 reconnects" in camera_lines[1]
    assert "connection refused" in camera_lines[1]
    assert "cam1" in camera_lines[2] and "streaming" in camera_lines[2]
    assert sum(line.startswith("frames ") for line in lines) == 1


def test_on_a_terminal_the_block_is_redrawn_in_place_and_many_cameras_are_summed_up(tmp_path: Path) -> None:
    supervisor = supervisor_with_cameras(tmp_path, 40)
    for i in range(40):
        state = CameraState.STREAMING if i % 4 else CameraState.STALLED
        supervisor.camera_states[f"cam{i}"] = CameraView(state, None, time.monotonic())
    terminal = Terminal()
    display = ProgressDisplay(terminal)
    display(supervisor)
    display(supervisor)
    first, second = terminal.getvalue().split("\x1b[", 1)[0], terminal.getvalue()
    assert first == "\r"
    block = second.rsplit(f"\x1b[{ProgressDisplay.MAX_CAMERA_LINES}F", 1)[1]  # cursor back up the block
    lines = block.replace("\x1b[2K", "").split("\n")
    assert len(lines) == 1 + ProgressDisplay.MAX_CAMERA_LINES
    assert lines[-1].strip().startswith("... 25 more:")
    assert "streaming" in lines[-1] and "stalled" in lines[-1]


def test_the_summary_says_how_each_camera_ended() -> None:
    now = time.monotonic()
    summary = RunSummary(
        counters={"decode:gate": {"reconnects": 0}, "decode:door": {"reconnects": 5, "stalls": 1}},
        failed={"decode:gate": "cannot open rtsp://guard:***@h/s: unauthorized"},
        cameras_done=set(),
        camera_errors={"gate": "cannot open rtsp://guard:***@h/s: unauthorized"},
        cameras={
            "gate": CameraView(CameraState.FAILED, "cannot open rtsp://guard:***@h/s: unauthorized", now),
            "door": CameraView(CameraState.STOPPED, "stop requested", now),
        },
        wall_s=12.0,
        interrupted=True,
    )
    text = format_summary(summary)
    assert "camera door: stopped (stop requested), 5 reconnects, 1 stall" in text
    assert "camera gate: failed (cannot open rtsp://guard:***@h/s: unauthorized)" in text


def test_a_host_running_some_stages_shows_only_their_figures(tmp_path: Path) -> None:
    supervisor = supervisor_with_cameras(tmp_path, 1)
    supervisor.counters["decode:cam0"] = {"frames_sent": 40, "frames_dropped": 2}
    out = io.StringIO()
    ProgressDisplay(out, every_s=0)(supervisor)
    headline = next(line for line in out.getvalue().splitlines() if line.startswith("frames "))
    assert headline.startswith("frames 40 sampled, 2 dropped | ")
    assert "analysed" not in headline and "alerts" not in headline  # detect and alert run on another host
    summary = format_summary(supervisor.summary())
    assert "throughput" not in summary


def test_the_summary_shows_what_went_wrong_with_alerts_only_when_something_did() -> None:
    def alert_line(counters: dict[str, int]) -> str:
        summary = RunSummary({"alert": counters}, {}, set(), {}, {}, 1.0, False)
        return next(line for line in format_summary(summary).splitlines() if line.strip().startswith("alert "))

    quiet = alert_line({"alerts": 3, "delivered": 3, "store_failures": 0})
    assert quiet.strip() == "alert                  alerts 3, delivered 3, delivery failed 0"
    troubled = alert_line({"alerts": 3, "delivered": 2, "store_failures": 7, "dead_letters": 1})
    assert troubled.endswith("delivery failed 0, dead letters 1, store failures 7")


def test_the_summary_counts_each_line_s_crossings_by_direction() -> None:
    crossings = {"plaza/left/walkway": 5, "plaza/right/walkway": 3, "yard/down/fence": 1}
    summary = RunSummary({}, {}, set(), {}, {}, 1.0, False, crossings)
    assert format_summary(summary).splitlines()[1:] == [
        "  line plaza/walkway: 8 crossings (5 going left, 3 going right)",
        "  line yard/fence: 1 crossing (1 going down)",
    ]
