"""A fast replay whose speech recognizer is slower than its detector: fuse holds each analysed frame
(with its image) until the camera's audio has been analysed past it, so how far decode may run ahead
of transcribe bounds fuse's memory. transcribe is a stand-in (tests/stages/stand_ins.py) that takes
half a second per second of audio, a machine too slow for its model; decode, detect, fuse and alert
are the real stages on the demo clip."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.stage_specs import build_specs
from pipeline.supervisor import Supervisor
from pipeline.transport import Endpoints
from tests.conftest import make_config

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
