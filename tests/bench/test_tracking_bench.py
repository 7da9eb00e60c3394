from __future__ import annotations

import json

from bench.tracking_bench import main, walkers


def test_walkers_lose_about_a_fifth_of_their_detections_and_move():
    frames = walkers(50, 10)
    assert 30 <= len(frames[0]) <= 50
    assert {round(b.x1, 3) for b in frames[0]} != {round(b.x1, 3) for b in frames[-1]}


def test_the_tracking_bench_reports_cost_per_frame_for_each_crowd(tmp_path, capsys):
    out = tmp_path / "tracking.json"
    assert main(["--people", "5", "40", "--frames", "20", "--repeat", "1", "--json", str(out)]) == 0
    sizes = json.loads(out.read_text())["sizes"]
    assert [s["people"] for s in sizes] == [5, 40]
    assert all(s["ms_per_frame"] > 0 and s["cameras_per_core"] > 0 for s in sizes)
    assert "40 people:" in capsys.readouterr().out
