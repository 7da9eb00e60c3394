"""Recording benchmark: what ``cameras.<id>.record`` adds to decode's CPU. Reads a clip as decode
does (every packet demuxed and decoded) with and without the recorder copying the packets into
segments, alternated ``--repeat`` times, and reports the CPU seconds of each (medians), the ratio,
and the recorder's own cost per second of video.

    python -m bench.recording_bench [--clip media/demo.mp4] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av

from pipeline.arguments import at_least
from pipeline.record_settings import RecordConfig
from stages.recording import Recorder, segments

DEMO_CLIP = Path(__file__).resolve().parent.parent / "media" / "demo.mp4"


def decode_cpu_s(clip: Path, folder: Path | None) -> tuple[float, float, int]:
    """CPU seconds to demux and decode every packet of ``clip`` (recording into ``folder`` when
    given), the clip's video duration, and the segments written."""
    with av.open(str(clip)) as source:
        video = source.streams.video[0]
        audio = source.streams.audio[0] if source.streams.audio else None
        video.thread_type = "NONE"  # decode's default, stages.decode.threads 1
        recorder = None
        if folder is not None:
            settings = RecordConfig(folder=str(folder), segment_s=10, min_free_gb=0)
            recorder = Recorder("bench", settings, video, audio)
        began = time.process_time()
        last = 0.0
        for packet in source.demux(*([video] if audio is None else [video, audio])):
            packet.decode()
            if packet.pts is not None and packet.stream.index == video.index and packet.time_base is not None:
                last = max(last, float(packet.pts * packet.time_base))
            if recorder is not None:
                recorder.write(packet)
        if recorder is not None:
            recorder.close()
        used = time.process_time() - began
    written = len(segments(recorder.settings, "bench")) if recorder is not None else 0
    return used, last, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DEMO_CLIP, help="an H.264 clip (default: the demo clip)")
    parser.add_argument("--repeat", type=at_least(1), default=5, help="alternated runs of each; medians (5)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    plain, recorded, written = [], [], 0
    duration = 0.0
    with tempfile.TemporaryDirectory(prefix="vigil-recording-bench-") as scratch:
        for turn in range(args.repeat):
            cpu, duration, _ = decode_cpu_s(args.clip, None)
            plain.append(cpu)
            cpu, duration, written = decode_cpu_s(args.clip, Path(scratch) / str(turn))
            recorded.append(cpu)
    alone, with_recording = statistics.median(plain), statistics.median(recorded)
    extra_ms = 1000 * (with_recording - alone) / max(duration, 1e-6)
    results: dict[str, Any] = {
        "clip": str(args.clip),
        "video_s": round(duration, 2),
        "decode_cpu_s": round(alone, 4),
        "decode_and_record_cpu_s": round(with_recording, 4),
        "ratio": round(with_recording / alone, 3) if alone > 0 else None,
        "recording_cpu_ms_per_video_s": round(extra_ms, 3),
        "segments": written,
        "runs": {"decode": [round(x, 4) for x in plain], "decode_and_record": [round(x, 4) for x in recorded]},
    }
    print(f"{args.clip.name}: {duration:.1f} s of video, median of {args.repeat} alternated runs")
    print(f"  decode alone            {alone:7.3f} s CPU")
    print(f"  decode and record       {with_recording:7.3f} s CPU  ({results['ratio']} x; {written} segment(s))")
    print(f"  recording               {extra_ms:7.2f} ms CPU per second of video")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
