from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from pipeline.config import DetectConfig
from pipeline.messages import Box, EndOfStream, Frame
from pipeline.transport import Receiver, Sender
from stages.detect import FreshestFrames, gather_batch, warm_up
from stages.detectors.base import create_detector


def frame(camera: str, seq: int) -> Frame:
    return Frame(camera=camera, seq=seq, pts=seq / 5, wall_time=0.0, image=np.zeros((4, 4, 3), np.uint8))


def test_a_batch_takes_waiting_frames_of_every_camera_and_stops_at_end_of_stream(tmp_path):
    context = zmq.Context()
    try:
        endpoint = f"ipc://{tmp_path / 'detect.sock'}"
        receiver = Receiver(context, endpoint, queue=16)
        lobby, gate = Sender(context, endpoint, queue=16), Sender(context, endpoint, queue=16)
        for sender in (lobby, gate):  # both connected before the frames: connecting is asynchronous
            sender.send(frame("hello", 0))
            assert receiver.recv(timeout_ms=2000) is not None
        for seq in range(3):
            lobby.send(frame("lobby", seq))
            gate.send(frame("gate", seq))
        lobby.send_control(EndOfStream("lobby", "video"))
        time.sleep(0.2)  # every message in the receiver's queues, as when the detector was busy
        first = receiver.recv(timeout_ms=2000)
        assert first is not None
        frames, ends = gather_batch(receiver, first, size=4)
        assert len(frames) == 4 and {f.camera for f in frames} == {"lobby", "gate"}
        rest: list[Frame] = []
        ends = []
        while not ends:
            message = receiver.recv(timeout_ms=2000)
            assert message is not None
            more, ends = gather_batch(receiver, message, size=16)
            rest += more
        assert ends == [EndOfStream("lobby", "video")]
        lobby_seqs = [f.seq for f in frames + rest if f.camera == "lobby"]
        assert lobby_seqs == [0, 1, 2], "every lobby frame comes before the lobby's end of stream, in order"
    finally:
        context.destroy(linger=0)


def test_a_fast_batch_waits_a_bounded_time_for_frames_still_coming(tmp_path):
    context = zmq.Context()
    try:
        endpoint = f"ipc://{tmp_path / 'detect.sock'}"
        receiver = Receiver(context, endpoint, queue=16)
        lobby = Sender(context, endpoint, queue=16)
        lobby.send(frame("lobby", 0))
        first = receiver.recv(timeout_ms=2000)
        assert first is not None
        late = threading.Timer(0.2, lambda: lobby.send(frame("lobby", 1)))
        late.start()
        frames, _ = gather_batch(receiver, first, size=3, fill_s=1.0)
        late.join()
        assert [f.seq for f in frames] == [0, 1], "the frame sent 0.2 s later joined the batch"
        began = time.monotonic()
        frames, _ = gather_batch(receiver, frame("lobby", 2), size=3, fill_s=0.3)
        assert [f.seq for f in frames] == [2] and time.monotonic() - began < 2, "a batch not filled goes anyway"
    finally:
        context.destroy(linger=0)


def test_live_cameras_get_their_newest_frame_analysed_fairly_and_the_backlog_skipped() -> None:
    waiting = FreshestFrames()
    for seq in range(5):
        waiting.add(frame("lobby", seq))
    for seq in range(2):
        waiting.add(frame("gate", seq))
    assert waiting.skipped == 5 and len(waiting) == 2
    assert [(f.camera, f.seq) for f in waiting.take(1)] == [("lobby", 4)], "the newest frame only"
    waiting.add(frame("lobby", 5))
    assert [(f.camera, f.seq) for f in waiting.take(1)] == [("gate", 1)], "then the camera not served yet"
    waiting.add(frame("gate", 2))
    assert [(f.camera, f.seq) for f in waiting.take(1)] == [("lobby", 5)], "then the one served longest ago"
    assert [(f.camera, f.seq) for f in waiting.take(4)] == [("gate", 2)]


def arriving(camera: str, seq: int, waited_s: float, clock_offset_s: float = 0.0) -> Frame:
    """A frame that has waited ``waited_s`` here, from a decoder whose clock is ``clock_offset_s`` off."""
    captured = time.time() - waited_s + clock_offset_s
    return Frame(camera=camera, seq=seq, pts=seq / 5, wall_time=captured, image=np.zeros((4, 4, 3), np.uint8))


def test_a_busy_detector_takes_frames_captured_during_its_last_detection_first() -> None:
    waiting = FreshestFrames()
    waiting.add(arriving("a", 0, 0.0))  # each camera delivered a frame on time before
    waiting.add(arriving("b", 0, 0.0))
    waiting.take(2)
    waiting.add(arriving("a", 1, 0.19))
    waiting.add(arriving("b", 1, 0.03))
    assert [f.camera for f in waiting.take(1, fresh_s=0.08)] == ["b"]  # though "a" was served before it
    assert [f.camera for f in waiting.take(1, fresh_s=0.08)] == ["a"]  # then the stale one, not skipped for ever


def test_a_frame_passed_over_is_skipped_rather_than_analysed_late_when_asked() -> None:
    waiting = FreshestFrames()
    for camera in "abc":
        waiting.add(arriving(camera, 0, 0.0))
    waiting.take(3)
    waiting.add(arriving("a", 1, 0.19))  # waited through a whole detection of 0.08 s
    waiting.add(arriving("b", 1, 0.03))
    assert [f.camera for f in waiting.take(1, fresh_s=0.08, skip_stale=True)] == ["b"]
    assert waiting.skipped == 1 and len(waiting) == 0, "a's frame was skipped, not kept for later"
    waiting.add(arriving("c", 1, 0.5))
    assert waiting.take(1, fresh_s=0.08, skip_stale=True) == []  # the detector waits for a fresh frame


def test_freshness_is_judged_against_each_cameras_own_clock() -> None:
    waiting = FreshestFrames()
    for seq in range(3):  # this decoder's host clock is 5 s behind: its frames look 5 s old on arrival
        waiting.add(arriving("remote", seq, 0.0, clock_offset_s=-5.0))
        waiting.take(1, fresh_s=0.08, skip_stale=True)
    waiting.add(arriving("remote", 3, 0.02, clock_offset_s=-5.0))
    assert [f.seq for f in waiting.take(1, fresh_s=0.08, skip_stale=True)] == [3]
    waiting.add(arriving("remote", 4, 0.3, clock_offset_s=-5.0))
    assert waiting.take(1, fresh_s=0.08, skip_stale=True) == []  # but one that really waited is stale


def test_warm_up_runs_the_real_model_once_on_a_full_batch_of_blank_frames() -> None:
    detector = create_detector(DetectConfig(backend="opencv", threads=2, batch=4))
    runs: list[list[list[Box]]] = []
    shapes: list[tuple[int, ...]] = []

    class Recording:  # the real detector, its calls recorded
        names = detector.names

        def detect(self, images):
            shapes.extend(image.shape for image in images)
            runs.append(detector.detect(images))
            return runs[-1]

    seconds = warm_up(Recording(), batch=4, size=416)
    assert shapes == [(416, 416, 3)] * 4, "one run, a full batch"
    assert runs == [[[], [], [], []]], "blank frames: nothing found, nothing sent anywhere"
    assert seconds > 0


def test_live_batches_default_to_16_frames_on_a_gpu_and_1_on_a_cpu() -> None:
    assert DetectConfig().live_batch_size() == 1, "on a CPU each frame adds its time to every frame's latency"
    gpu = DetectConfig(backend="ultralytics", model="yolo11n.yaml", device="cuda:0")
    assert gpu.live_batch_size() == 16
    assert gpu.model_copy(update={"device": "cpu"}).live_batch_size("cuda:1") == 16, "where the stage was placed"
    assert gpu.model_copy(update={"live_batch": 4}).live_batch_size() == 4, "what the config says wins"
    assert DetectConfig(device="cuda:0").live_batch_size() == 1, "OpenCV's pip wheels compute on the CPU"
