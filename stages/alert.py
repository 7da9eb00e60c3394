"""alert: the sink. Every alert event is appended to the JSON-lines log, then POSTed to every
webhook by that webhook's own worker. When a camera's end of stream arrives, the sink waits until
that camera's alerts are delivered (or given up) and reports the camera as done."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.messages import AlertEvent, EndOfStream
from pipeline.stage import StageContext
from stages.webhook import Delivery, WebhookWorker, probe_webhook

logger = logging.getLogger(__name__)


def with_snapshot(payload: dict[str, Any], jpeg: bytes) -> dict[str, Any]:
    """The webhook body: the payload plus the JPEG snapshot as base64."""
    snapshot = {
        "content_type": "image/jpeg",
        "bytes": len(jpeg),
        "data_base64": base64.b64encode(jpeg).decode(),
    }
    return {**payload, "snapshot": snapshot}


class AlertLog:
    """Appends each alert (without the snapshot bytes) as one JSON line."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, payload: dict[str, Any], snapshot_bytes: int) -> None:
        if self.path is None:
            return
        line = json.dumps({**payload, "snapshot": {"content_type": "image/jpeg", "bytes": snapshot_bytes}})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def wait_for_deliveries(workers: list[WebhookWorker], camera: str, timeout_s: float, ctx: StageContext) -> None:
    """Hold the camera's end of stream until its alerts are delivered, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while any(w.pending_for(camera) for w in workers) and not ctx.should_stop():
        ctx.beat()
        if time.monotonic() >= deadline:
            for worker in workers:
                if worker.pending_for(camera):
                    logger.error(
                        "webhook %s: %d alert(s) of camera %s not delivered yet at the end of its stream "
                        "(they are in the alert log)",
                        worker.url,
                        worker.pending_for(camera),
                        camera,
                    )
            return
        time.sleep(0.05)


def run(ctx: StageContext) -> None:
    alerts = ctx.config.alerts
    receiver = ctx.receiver(ctx.endpoints.alert, queue=1024)
    log = AlertLog(alerts.log_path)
    workers = [WebhookWorker(webhook, ctx.stop_event) for webhook in alerts.webhooks]
    for worker in workers:
        problem = probe_webhook(worker.webhook)
        if problem:
            logger.error("webhook %s: %s; alerts are kept and retried", worker.url, problem)
        worker.start()
    if not workers:
        logger.warning("no webhooks configured: alerts go to the log only")
    ctx.report("ready")
    while not ctx.should_stop():
        ctx.beat()
        message = receiver.recv(timeout_ms=100)
        ctx.counters["delivered"] = sum(w.delivered for w in workers)
        ctx.counters["delivery_failed"] = sum(w.failed for w in workers)
        if isinstance(message, AlertEvent):
            payload = message.payload
            log.append(payload, len(message.snapshot))
            body = json.dumps(with_snapshot(payload, message.snapshot)).encode()
            delivery = Delivery(payload["id"], payload["event"], payload["camera"], body)
            for worker in workers:
                worker.submit(delivery)
            ctx.counters["alerts"] += 1
        elif isinstance(message, EndOfStream):
            wait_for_deliveries(workers, message.camera, alerts.end_of_stream_wait_s, ctx)
            ctx.counters["delivered"] = sum(w.delivered for w in workers)
            ctx.counters["delivery_failed"] = sum(w.failed for w in workers)
            ctx.report("camera-done", message.error, message.camera)
    receiver.close()
