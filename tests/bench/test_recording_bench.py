from __future__ import annotations

import json

from bench.recording_bench import main


def test_the_recording_bench_compares_decode_with_and_without_recording(tmp_path, demo_clip, capsys):
    out = tmp_path / "recording.json"
    assert main(["--clip", str(demo_clip), "--repeat", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["video_s"] > 29 and figures["segments"] == 3  # 10 s segments of the 30 s clip
    assert figures["decode_cpu_s"] > 0 and figures["decode_and_record_cpu_s"] > 0 and figures["ratio"] > 0
    assert "ms CPU per second of video" in capsys.readouterr().out
