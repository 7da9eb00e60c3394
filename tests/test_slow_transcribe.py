"""A fast replay whose speech recognizer is slower than its detector: fuse holds each analysed frame
(with its image) until the camera's audio has been analysed past it, so how far decode may run ahead
of transcribe bounds fuse's memory. transcribe is a stand-in (tests/stages/stand_ins.py) that takes
half a second per second of audio, a machine too slow for its model; decode, detect, fuse and alert
are the real stages on the demo clip."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from pipeline.stage_specs import build_specs
from pipeline.supervisor import Supervisor
from pipeline.transport import Endpoints
from tests.conftest import make_config
from tests.stages.stand_ins import STALL_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_slow_recognizer_holds_decode_back_so_fuse_keeps_few_frames_waiting(tmp_path):
    config = make_config(tmp_path)
    specs = [
        dataclasses.replace(s, target="tests.stages.stand_ins:slow_transcribe") if s.name == "transcribe" else s
        for s in build_specs(config, Endpoints.in_folder(tmp_path))
    ]
    summary = Supervisor(config, specs=specs).run()
    assert summary.exit_code == 0, summary.failed
    fuse = summary.counters["fuse"]
    assert fuse["frames_scored"] == 150, "every frame was scored once its audio was in"
    # decode runs at most FAST_REPLAY_AUDIO_QUEUE chunks ahead on each side of the link (29 frames
    # waited at the peak; 102 of the 150 with the earlier 64 + 256 chunks)
    assert fuse["pending_frames_peak"] <= 50, "frames waiting in fuse for their audio (150 in the clip)"


def test_decode_ends_only_once_a_stalled_transcribe_has_taken_its_last_audio(tmp_path):
    """transcribe stops reading for longer than a process's exit lingers, just as decode sends its
    last chunks and ends: decode waits for them to be taken (its outbox), so no chunk and no end of
    stream is lost and fuse, which waits for every camera's audio in fast replay, finishes."""
    config = make_config(tmp_path)
    specs = [
        dataclasses.replace(s, target="tests.stages.stand_ins:stalling_transcribe") if s.name == "transcribe" else s
        for s in build_specs(config, Endpoints.in_folder(tmp_path))
    ]
    supervisor = Supervisor(config, specs=specs)
    give_up = threading.Timer(STALL_S + 60, supervisor.request_stop)  # a lost end of stream: fuse waits forever
    give_up.start()
    try:
        summary = supervisor.run()
    finally:
        give_up.cancel()
    assert summary.exit_code == 0, summary.failed
    sent = summary.counters["decode:plaza"]["audio_chunks_sent"]
    assert sent >= 60, "30 s of audio in 0.5 s chunks"
    assert summary.counters["transcribe"]["chunks_in"] == sent
    assert summary.counters["fuse"]["frames_scored"] == 150
