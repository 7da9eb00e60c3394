"""The standalone limits the pipeline is compared with, measured as the stages run: the real
YOLOv3-tiny detector on frames of the demo clip as decode makes them."""

from __future__ import annotations

import pytest

from bench.limits import decode_frames, detect_limits
from pipeline.config import VigilConfig, load_config
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def demo() -> VigilConfig:
    return load_config(ROOT / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def frames(demo: VigilConfig) -> list:
    images, _, _ = decode_frames(next(iter(demo.cameras.values())))
    return images[:16]


def with_detect(config: VigilConfig, **changes: object) -> VigilConfig:
    detect = config.stages.detect.model_copy(update=changes)
    return config.model_copy(update={"stages": config.stages.model_copy(update={"detect": detect})})


def test_the_detector_alone_is_timed_as_fast_replay_runs_it_and_batch_1_as_live_cameras_do(demo, frames) -> None:
    copies = detect_limits(demo, frames)
    assert copies["lanes"] == 2, "the demo's 2 threads: two single-thread copies in fast replay"
    assert copies["fps"] > 0 and copies["batch1_latency_ms"] > 0
    one = detect_limits(with_detect(demo, parallelism="intra-op"), frames, latency=False)
    assert one["lanes"] == 1 and one["fps"] > 0
    assert "batch1_latency_ms" not in one
