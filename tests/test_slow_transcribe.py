"""A fast replay whose speech recognizer is slower than its detector: fuse holds each analysed frame
(with its image) until the camera's audio has been analysed past it, so how far decode may run ahead
of transcribe bounds fuse's memory. transcribe is a stand-in (tests/stages/stand_ins.py) that takes
half a second per second of audio, a machine too slow for its model; decode, detect, fuse and alert
are the real stages on the demo clip."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading

import pytest
import yaml

from pipeline.run_state import RunSummary
from pipeline.stage_specs import build_specs
from pipeline.supervisor import Supervisor
from pipeline.transport import Endpoints
from tests.conftest import ROOT, make_config
from tests.stages.stand_ins import STALL_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run_or_give_up(supervisor: Supervisor) -> tuple[RunSummary, bool]:
    """The run's summary, and whether it had to be stopped: fuse waits forever for a lost end of
    stream, so a run that does not end by itself well after the stall is stopped."""
    gave_up = threading.Event()

    def give_up() -> None:
        gave_up.set()
        supervisor.request_stop()

    timer = threading.Timer(STALL_S + 60, give_up)
    timer.start()
    try:
        return supervisor.run(), gave_up.is_set()
    finally:
        timer.cancel()


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
    summary, gave_up = run_or_give_up(Supervisor(config, specs=specs))
    assert not gave_up, "fuse never got the camera's end of stream"
    assert summary.exit_code == 0, summary.failed
    sent = summary.counters["decode:plaza"]["audio_chunks_sent"]
    assert sent >= 60, "30 s of audio in 0.5 s chunks"
    assert summary.counters["transcribe"]["chunks_in"] == sent
    assert summary.counters["fuse"]["frames_scored"] == 150


def test_a_decode_only_host_ends_only_once_a_stalled_transcribe_has_taken_its_last_audio(tmp_path):
    """As above with the decoder on a host of its own (``run.py stage decode``, where no alert sink
    ends the run): its connections stay open for ``stages.decode.end_hold_s`` after the file, longer
    than transcribe's stall, so it reads the end of stream, which its receiver lost when the process ended
    once its messages had merely left it (in every try)."""
    hold_s = STALL_S + 5  # the default is 30 s; longer than the stall is what counts
    config = make_config(tmp_path, stages={"decode": {"end_hold_s": hold_s}})
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    stand_in = "tests.stages.stand_ins:late_stalling_transcribe"
    specs = [
        dataclasses.replace(s, target=stand_in) if s.name == "transcribe" else s
        for s in build_specs(config, Endpoints.in_folder(tmp_path))
        if s.name != "decode"
    ]
    supervisor = Supervisor(config, specs=specs)
    decode_host = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "stage", "decode", "--config", str(config_file), "-q"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        summary, gave_up = run_or_give_up(supervisor)
    finally:
        decode_log, _ = decode_host.communicate(timeout=60)
    assert not gave_up, "fuse never got the camera's end of stream"
    assert decode_host.returncode == 0, decode_log
    assert summary.exit_code == 0, summary.failed
    assert summary.counters["transcribe"]["chunks_in"] >= 60, "30 s of audio in 0.5 s chunks"
    assert summary.counters["fuse"]["frames_scored"] == 150
