"""``run.py preview``: a camera's analysis frame with its zones, lines and a coordinate grid, from the
real demo clip and from the real test RTSP server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import CameraConfig, DecodeConfig, LineConfig, ZoneConfig
from pipeline.preview import GRID_COLOUR, grab_frame, preview_image
from stages.fusion.snapshot import DISARMED_COLOUR, LINE_COLOUR, ZONE_COLOUR
from stages.media import open_media
from stages.sampling import VideoSample, sample_media
from tests.support.rtsp import RtspServer

ROOT = Path(__file__).resolve().parents[2]
DECODE = DecodeConfig()


def analysis_frame_at(clip: Path, pts: float) -> np.ndarray:
    """The frame decode sends at media time ``pts``, read from the start of the clip."""
    camera = CameraConfig(source=str(clip))
    with open_media(str(clip), timeout_s=10) as media:
        for sample in sample_media(media, media.container.streams.video[0], None, camera.analysis, 0.5):
            if isinstance(sample, VideoSample) and sample.pts >= pts - 1e-6:
                return sample.image
    raise AssertionError(f"no frame at {pts}")


def test_a_file_s_frame_at_a_media_time_is_the_one_decode_analyses_there(demo_clip: Path):
    camera = CameraConfig(source=str(demo_clip))
    at_12 = grab_frame(camera, DECODE, 12.0)
    assert at_12.shape == (480, 640, 3)
    assert np.abs(at_12.astype(int) - analysis_frame_at(demo_clip, 12.0).astype(int)).mean() < 1.0
    assert np.abs(at_12.astype(int) - grab_frame(camera, DECODE, 0.0).astype(int)).mean() > 3.0


def test_a_time_past_the_end_says_where_the_file_ends(demo_clip: Path):
    with pytest.raises(ValueError, match=r"no frame at 99.0 s \(it ends at 29.8 s\)"):
        grab_frame(CameraConfig(source=str(demo_clip)), DECODE, 99.0)


def test_the_preview_draws_the_grid_the_zones_and_the_lines():
    camera = CameraConfig(
        source="x.mp4",
        zones={"door": ZoneConfig(polygon=[(0.05, 0.05), (0.45, 0.05), (0.45, 0.45)])},
        lines={"gate": LineConfig(points=[(0.55, 0.25), (0.95, 0.25)], direction="down")},
    )
    drawn = preview_image(camera, np.zeros((100, 200, 3), np.uint8))
    assert tuple(drawn[70, 100]) == GRID_COLOUR  # x = 0.5
    assert tuple(drawn[60, 170]) == GRID_COLOUR  # y = 0.6
    assert tuple(drawn[5, 50]) == ZONE_COLOUR  # the zone's top edge
    assert tuple(drawn[25, 160]) == LINE_COLOUR
    assert (drawn[30:40, 150] == LINE_COLOUR).all(axis=1).sum() >= 5  # the arrow, pointing down


def test_the_preview_greys_out_a_rule_not_armed_at_the_frame_s_clock_time():
    from datetime import datetime

    camera = CameraConfig(
        source="x.mp4",
        zones={"door": ZoneConfig(polygon=[(0.05, 0.05), (0.45, 0.05), (0.45, 0.45)], armed=["22:00-06:00"])},
    )
    night, noon = datetime(2026, 11, 28, 23, 0), datetime(2026, 11, 28, 12, 0)
    assert tuple(preview_image(camera, np.zeros((100, 200, 3), np.uint8), moment=night)[5, 50]) == ZONE_COLOUR
    assert tuple(preview_image(camera, np.zeros((100, 200, 3), np.uint8), moment=noon)[5, 50]) == DISARMED_COLOUR


def test_a_live_camera_gives_its_first_frame(demo_clip: Path):
    with RtspServer(demo_clip) as server:
        frame = grab_frame(CameraConfig(source=server.url, analysis={"width": 320}), DECODE, 0.0)
    assert frame.shape == (240, 320, 3)


def test_run_py_preview_writes_one_image_per_camera_and_refuses_an_unknown_camera(tmp_path: Path):
    run = [sys.executable, str(ROOT / "run.py"), "preview", "configs/demo.yaml"]
    done = subprocess.run([*run, "--at", "6", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"plaza: {tmp_path / 'plaza.jpg'} (640x480, 1 zone(s), 0 line(s))" in done.stdout
    image = cv2.imread(str(tmp_path / "plaza.jpg"))
    assert image is not None and image.shape == (480, 640, 3)
    detected = subprocess.run(
        [*run, "--at", "12", "--detect", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert detected.returncode == 0, detected.stderr
    assert re.search(r"\(640x480, 1 zone\(s\), 0 line\(s\), detected \d+ person", detected.stdout), detected.stdout
    wrong = subprocess.run([*run, "--camera", "lobby"], capture_output=True, text=True, cwd=ROOT)
    assert wrong.returncode == 2
    assert "error: no camera 'lobby' in configs/demo.yaml (it has: plaza)" in wrong.stderr


def test_preview_shows_what_the_masks_and_object_filters_ignore_with_the_real_detector(tmp_path: Path):
    site = tmp_path / "site.yaml"
    mask = (
        "    masks:\n      everywhere: {polygon: [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], classes: [person]}\n"
    )
    demo = (ROOT / "configs/demo.yaml").read_text().replace("../media/demo.mp4", str(ROOT / "media/demo.mp4"))
    site.write_text(demo.replace("    count_threshold: {person: 8}\n", "    count_threshold: {person: 8}\n" + mask))
    run = [sys.executable, str(ROOT / "run.py"), "preview", str(site), "--at", "12", "--detect", "--out", str(tmp_path)]
    done = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    found = re.search(
        r"\(640x480, 1 zone\(s\), 0 line\(s\), detected (.*) \((\d+) more ignored by its masks", done.stdout
    )
    assert found, done.stdout
    assert "person" not in found.group(1) and int(found.group(2)) >= 3, "every person is under the mask, no car is"
    image = cv2.imread(str(tmp_path / "plaza.jpg"))
    assert image is not None and image.mean() < analysis_frame_at(ROOT / "media/demo.mp4", 12.0).mean(), "shaded"
