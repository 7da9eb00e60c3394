"""tcp between two hosts against ipc on one host, in one run: frames/s and capture-to-detection latency.

Two network namespaces joined by a veth pair stand for two hosts (``tests/support/netns.py``, root
needed). The demo clip is replayed through ``run.py stage``: once with every stage on one host over
ipc, once with decode on host A and the rest on host B over tcp with CURVE. Each is run in ``fast``
mode (frames/s: how fast the pipeline goes) and in ``realtime`` mode (latency at camera pace).

    python -m bench.hosts_bench [--json bench-output/hosts.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.metrics import LATENCY_BUCKETS_S, Histogram, prometheus_number
from pipeline.security import generate_keys
from tests.support.netns import Host, HostPair

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "media" / "demo.mp4"
METRICS_PORT = 9108
PORTS = {"detect": 5601, "transcribe": 5602, "fuse": 5603, "alert": 5604}
EVERY_STAGE = ["decode", "detect", "transcribe", "fuse", "alert"]


def write_config(folder: Path, mode: str, central: Host | None) -> Path:
    """The demo config (its webhooks dropped: delivery is not measured here); tcp to ``central``."""
    data = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    data["cameras"]["plaza"]["source"] = str(CLIP)
    data["alerts"] = {
        key: str(folder / name) for key, name in (("outbox_path", "out.sqlite"), ("pending_path", "p.sqlite"))
    }
    data["runtime"] = {"mode": mode, "ipc_dir": str(folder / "ipc")}
    if central is not None:
        keys = folder / "keys"
        if not (keys / "server.key").exists():
            generate_keys(keys, "server")
            generate_keys(keys / "clients", "client")
        data["network"] = {
            **{stage: {"bind": f"tcp://{central.address}:{port}"} for stage, port in PORTS.items()},
            "curve": {
                "server_public_key_file": str(keys / "server.key"),
                "server_secret_key_file": str(keys / "server.key_secret"),
                "client_secret_key_file": str(keys / "clients" / "client.key_secret"),
                "allowed_clients_dir": str(keys / "clients"),
            },
        }
    path = folder / f"{mode}-{'tcp' if central else 'ipc'}.yaml"
    (folder / "ipc").mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start(host: Host, config: Path, names: list[str]) -> subprocess.Popen[str]:
    argv = [sys.executable, str(ROOT / "run.py"), "stage", *names, "--config", str(config), "-q"]
    return host.popen([*argv, "--metrics-address", f"{host.address}:{METRICS_PORT}"], cwd=ROOT)


def scrape(host: Host) -> str | None:
    try:
        return host.fetch(f"http://{host.address}:{METRICS_PORT}/metrics", timeout_s=1.0)
    except OSError:
        return None


def analysed(text: str) -> float:
    match = re.search(r'^vigil_frames_analysed_total\{[^}]*stage="detect"[^}]*\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def latency_histogram(text: str) -> Histogram:
    """detect's capture_to_detection histogram, back from the cumulative Prometheus buckets."""
    cumulative: dict[str, float] = {}
    pattern = r'^vigil_capture_to_detection_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$'
    for bound, value in re.findall(pattern, text, re.MULTILINE):
        cumulative[bound] = cumulative.get(bound, 0.0) + float(value)
    bounds = [prometheus_number(bound) for bound in LATENCY_BUCKETS_S] + ["+Inf"]
    ordered = [cumulative.get(bound, 0.0) for bound in bounds]
    counts = [int(ordered[0])] + [int(b - a) for a, b in itertools.pairwise(ordered)]
    return Histogram(counts=counts)


def run_once(hosts: HostPair, folder: Path, mode: str, over_tcp: bool) -> dict[str, Any]:
    central = hosts.b
    config = write_config(folder, mode, central if over_tcp else None)
    if over_tcp:
        processes = [start(central, config, EVERY_STAGE[1:]), start(hosts.a, config, ["decode"])]
    else:
        processes = [start(central, config, EVERY_STAGE)]
    samples: list[tuple[float, float]] = []
    last_text = ""
    while any(p.poll() is None for p in processes):
        text = scrape(central)
        if text:
            last_text = text
            samples.append((time.monotonic(), analysed(text)))
        time.sleep(0.25)
    for process in processes:
        output = process.communicate()[0]
        if process.returncode != 0:
            raise RuntimeError(f"{mode} over {'tcp' if over_tcp else 'ipc'} failed:\n{output}")
    final = samples[-1][1] if samples else 0.0
    moving = [(t, n) for t, n in samples if n > 0]
    first = moving[0] if moving else (0.0, 0.0)
    end = next((t for t, n in moving if n >= final), first[0])
    histogram = latency_histogram(last_text)
    return {
        "frames": final,
        "frames_per_s": (final - first[1]) / (end - first[0]) if end > first[0] else None,
        "capture_to_detection_ms": {
            "p50": histogram.quantile(0.5) * 1000,
            "p95": histogram.quantile(0.95) * 1000,
            "count": histogram.count,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-hosts-") as tmp, HostPair("bench") as hosts:
        for mode in ("fast", "realtime"):
            for transport in ("ipc", "tcp"):
                folder = Path(tmp) / f"{mode}-{transport}"
                folder.mkdir()
                print(f"hosts bench: {mode} over {transport} ...", flush=True)
                results[f"{mode}/{transport}"] = run_once(hosts, folder, mode, transport == "tcp")
    print(report(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict[str, Any]) -> str:
    lines = [f"{'run':<16} {'frames':>7} {'frames/s':>9} {'p50 ms':>8} {'p95 ms':>8}"]
    for name, row in results.items():
        latency = row["capture_to_detection_ms"]
        fps = row["frames_per_s"]
        lines.append(
            f"{name:<16} {row['frames']:>7.0f} {fps if fps is not None else float('nan'):>9.2f} "
            f"{latency['p50']:>8.0f} {latency['p95']:>8.0f}"
        )
    for mode in ("fast", "realtime"):
        ipc, tcp = results[f"{mode}/ipc"], results[f"{mode}/tcp"]
        if ipc["frames_per_s"] and tcp["frames_per_s"]:
            lines.append(f"{mode}: tcp/ipc frames/s {tcp['frames_per_s'] / ipc['frames_per_s']:.2f}")
        p95_ipc, p95_tcp = ipc["capture_to_detection_ms"]["p95"], tcp["capture_to_detection_ms"]["p95"]
        if p95_ipc:
            lines.append(f"{mode}: tcp/ipc p95 capture->detection {p95_tcp / p95_ipc:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
