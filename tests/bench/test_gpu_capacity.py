"""The GPU capacity search's arithmetic: what a run sustains, and which camera counts it tries.
(The runs themselves need a GPU host; ``python -m bench.gpu_capacity --device cpu --start 1 --max 1``
is the dry run here.)"""

from __future__ import annotations

from typing import Any

import pytest

from bench.gpu_capacity import search, steady


def rows(*rates: tuple[float, float]) -> list[dict[str, Any]]:
    """A sampled series at one row a second: (analysed, sampled) frames/s, and the counts so far."""
    series, analysed, sampled = [], 0.0, 0.0
    for t, (analysed_fps, sampled_fps) in enumerate(rates, start=1):
        analysed, sampled = analysed + analysed_fps, sampled + sampled_fps
        series.append(
            {
                "t": float(t),
                "analysed_fps": analysed_fps,
                "sampled_fps": sampled_fps,
                "analysed": analysed,
                "sampled": sampled,
            }
        )
    return series


def test_steady_reads_the_middle_half_of_the_active_run_not_its_start_or_end() -> None:
    # idle start-up, a slow first second per camera, a steady 300 frames/s, the clips ending
    series = rows((0, 0), (0, 40), (40, 200), *[(300, 320)] * 16, (90, 0))
    figures = steady(series)
    assert figures["analysed_fps"] == pytest.approx(300)
    assert figures["sampled_fps"] == pytest.approx(320)
    assert figures["seconds"] == pytest.approx(7)  # rows 8 to 15 of 3 to 20


def test_steady_of_a_run_that_analysed_nothing_is_zero() -> None:
    assert steady(rows((0, 10), (0, 10)))["analysed_fps"] == 0.0


def capacity(limit: int) -> tuple[list[int], Any]:
    tried: list[int] = []

    def measure(cameras: int) -> dict[str, Any]:
        tried.append(cameras)
        return {"cameras": cameras, "kept_up": min(1.0, limit / cameras)}

    return tried, measure


def test_search_doubles_until_a_run_falls_behind_then_tries_halfway() -> None:
    tried, measure = capacity(50)
    runs = search(measure, start=8, most=128, keep=0.95)
    assert tried == [8, 16, 32, 64, 48]
    assert [run["cameras"] for run in runs if run["kept_up"] >= 0.95] == [8, 16, 32, 48]


def test_search_stops_at_the_most_cameras_when_every_run_keeps_up() -> None:
    tried, measure = capacity(1000)
    search(measure, start=8, most=100, keep=0.95)
    assert tried == [8, 16, 32, 64]


def test_search_tries_nothing_smaller_when_the_first_run_falls_behind() -> None:
    tried, measure = capacity(4)
    runs = search(measure, start=8, most=128, keep=0.95)
    assert tried == [8]
    assert runs[0]["kept_up"] == 0.5
