"""Alert delivery benchmark: the real alert sink process (SQLite outbox, one delivery worker per
webhook) fed by fuse's own sending code (pending store, resend until acknowledged) and delivering
to a local HTTP receiver that checks every signature.

Reports, in one run: alerts/s the sink sustains for a burst, and the latency from fuse emitting an
alert to the receiver getting it (p50, p95) both in that burst and at a steady 5 alerts/s; once for
each webhook ``concurrency`` asked for, side by side, with the burst rate's ratio to the first.
``--receiver-ms`` makes the receiver take that long over each request (a receiver across a WAN, or
one that does work before it answers): where posting alerts side by side pays.

    python -m bench.alert_bench [--burst 300] [--steady 100] [--cameras 4] [--receiver-ms 0]
                                [--concurrency 1 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from pipeline.arguments import at_least, not_negative_float
from pipeline.messages import AlertEvent
from pipeline.receiver import WebhookReceiver
from pipeline.supervisor import Supervisor
from pipeline.transport import AckedSender, Endpoints
from stages.alerting.pending import AlertLink, PendingAlerts
from stages.fusion.snapshot import snapshot
from tests.conftest import SECRET, SECRET_ENV, make_config
from tests.support.harness import run_stages, wait_until


def make_alert(n: int, jpeg: bytes, cameras: int) -> AlertEvent:
    payload = {
        "schema": "vigil.alert.v1",
        "id": str(uuid.uuid4()),
        "incident_id": str(uuid.uuid4()),
        "event": "alert.opened",
        "camera": f"cam{n % cameras}",
        "score": 0.9,
        "reasons": ["bench"],
        "emitted": time.time(),
    }
    return AlertEvent(payload=payload, snapshot=jpeg)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def feed(link: AlertLink, alerts: list[AlertEvent], interval_s: float, receiver: WebhookReceiver) -> float:
    """Emit the alerts (every ``interval_s``, or all at once), pump acknowledgements until the
    receiver has them all; returns the seconds from the first emit to the last arrival."""
    started = time.time()
    target = len(receiver.deliveries) + len(alerts)
    for alert in alerts:
        alert.payload["emitted"] = time.time()
        link.emit(alert)
        link.pump()
        if interval_s:
            time.sleep(interval_s)
    deadline = time.monotonic() + 300
    while len(receiver.deliveries) < target and time.monotonic() < deadline:
        link.pump()
        time.sleep(0.005)
    return max(d.arrived for d in receiver.deliveries) - started


def latencies(receiver: WebhookReceiver, ids: set[str]) -> list[float]:
    return [d.arrived - d.payload["emitted"] for d in receiver.deliveries if d.alert_id in ids]


def measure(args: argparse.Namespace, concurrency: int, jpeg: bytes) -> dict[str, Any]:
    """One run of the sink with the webhook's ``concurrency``: the steady alerts, then the burst."""
    done: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-alert-bench-") as tmp, WebhookReceiver(SECRET) as receiver:
        receiver.slow_down(args.receiver_ms / 1000)
        folder = Path(tmp)
        hook = {"url": receiver.url, "secret_env": SECRET_ENV, "concurrency": concurrency}
        config = make_config(folder, alerts={"webhooks": [hook]})
        endpoints = Endpoints.in_folder(folder)
        context = zmq.Context()

        def scenario(supervisor: Supervisor) -> None:
            wait_until(lambda: bool(supervisor.counters.get("alert")), timeout=30)  # the sink is up
            link = AlertLink(PendingAlerts(folder / "fuse-pending.sqlite"), AckedSender(context, endpoints.alert), 2.0)
            steady = [make_alert(n, jpeg, args.cameras) for n in range(args.steady)]
            feed(link, steady, 0.2, receiver)
            burst = [make_alert(n, jpeg, args.cameras) for n in range(args.burst)]
            span = feed(link, burst, 0.0, receiver)
            steady_lat = latencies(receiver, {a.payload["id"] for a in steady})
            burst_lat = latencies(receiver, {a.payload["id"] for a in burst})
            done.update(
                burst_alerts_per_s=round(args.burst / span, 1),
                burst_latency_p50_ms=round(1000 * statistics.median(burst_lat), 1),
                burst_latency_p95_ms=round(1000 * percentile(burst_lat, 0.95), 1),
                steady_latency_p50_ms=round(1000 * statistics.median(steady_lat), 1),
                steady_latency_p95_ms=round(1000 * percentile(steady_lat, 0.95), 1),
                most_in_flight_at_receiver=receiver.most_in_flight,
                duplicates_at_receiver=receiver.duplicates,
                all_signatures_valid=all(d.signature_valid for d in receiver.deliveries),
            )
            link.sender.close()
            link.store.close()

        run_stages(config, ["alert"], scenario)
        context.destroy(linger=0)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=at_least(1), default=300, help="alerts emitted at once")
    parser.add_argument("--steady", type=at_least(1), default=100, help="alerts emitted at 5/s")
    parser.add_argument("--cameras", type=at_least(1), default=4, help="cameras the alerts come from, in turn")
    parser.add_argument("--receiver-ms", type=not_negative_float, default=0.0, help="the receiver's time per request")
    parser.add_argument(
        "--concurrency", type=at_least(1), nargs="+", default=[1, 4], help="the webhook's concurrency, each in turn"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    jpeg = snapshot(image, (), {}, 60_000)  # a snapshot of realistic size (noise compresses badly)
    results: dict[str, Any] = {
        "snapshot_bytes": len(jpeg),
        "burst_alerts": args.burst,
        "steady_alerts": args.steady,
        "cameras": args.cameras,
        "receiver_ms": args.receiver_ms,
        "by_concurrency": {},
    }
    for concurrency in args.concurrency:
        print(f"concurrency {concurrency}: {args.steady} alerts at 5/s, then {args.burst} at once", file=sys.stderr)
        done = measure(args, concurrency, jpeg)
        if not done:
            return 1
        results["by_concurrency"][str(concurrency)] = done
    first = results["by_concurrency"][str(args.concurrency[0])]["burst_alerts_per_s"]
    for done in results["by_concurrency"].values():
        done["burst_rate_ratio_to_first"] = round(done["burst_alerts_per_s"] / first, 2)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
