"""Every detector and speech backend runs inside its stage process, through the whole pipeline.

Random weights prove loading and plumbing here (the demo end-to-end test proves the real words and
boxes): ultralytics with a model built from ``yolo11n.yaml``, openai-whisper and transformers with
tiny random Whisper models saved the way their loaders read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.catalogue import resolve
from pipeline.supervisor import RunSummary, Supervisor
from tests.conftest import make_config
from tests.stages.speech.test_openai_whisper import random_checkpoint
from tests.stages.speech.test_transformers import save_random_whisper

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def replay(tmp_path: Path, *, fps: float, audio: bool, stages: dict[str, Any]) -> RunSummary:
    config = make_config(tmp_path, stages=stages)
    camera = config.cameras["plaza"]
    camera = camera.model_copy(update={"audio": audio, "analysis": camera.analysis.model_copy(update={"fps": fps})})
    config = config.model_copy(update={"cameras": {"plaza": camera}})
    return Supervisor(config).run()


def test_ultralytics_backend_runs_in_the_detect_stage(tmp_path):
    summary = replay(
        tmp_path,
        fps=1,
        audio=False,
        stages={"detect": {"backend": "ultralytics", "model": "yolo11n.yaml", "input_size": 320, "batch": 2}},
    )
    assert summary.exit_code == 0, summary.failed
    detect = summary.counters["detect"]
    assert detect["frames_analysed"] == 30
    assert detect["detect_ms_total"] > 0 and "input_wait_ms_total" in detect and "compute_wait_ms_total" in detect
    assert summary.counters["fuse"]["frames_scored"] == 30


@pytest.mark.parametrize("backend", ["openai-whisper", "transformers"])
def test_speech_backend_runs_in_the_transcribe_stage(tmp_path, backend):
    if backend == "openai-whisper":
        model = random_checkpoint(tmp_path / "random-tiny.en.pt")
    else:
        model = save_random_whisper(tmp_path / "random-whisper", Path(resolve("whisper-tiny.en")) / "tokenizer.json")
    summary = replay(
        tmp_path,
        fps=0.5,
        audio=True,
        stages={"transcribe": {"backend": backend, "model": str(model), "max_new_tokens": 8, "threads": 1}},
    )
    assert summary.exit_code == 0, summary.failed
    transcribe = summary.counters["transcribe"]
    assert transcribe["chunks_in"] == 61
    assert transcribe["windows_transcribed"] >= 1, "the spoken line reached the model"
    assert summary.counters["fuse"]["frames_scored"] == 15
