"""Incidents fuse cannot finish itself: one still open when vigil stops, and one a crashed fuse left
open (its successor finds it in the pending file). Each gets its ``alert.closed`` all the same, saying
why, so a receiver that tracks incidents (a ticket, a pager) never keeps one open for ever."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.messages import AlertEvent

ClosedBy = Literal["stop", "restart"]
WHY = {
    "stop": "vigil stopped while the incident was open",
    "restart": "fuse stopped while the incident was open (a crash or a kill) and started again without it; "
    "if what raised it goes on, a new incident opens",
}


def stable_id(*parts: object) -> str:
    """An id made from ``parts`` alone: the same alert built twice (a restart halfway) has one id,
    and the sink drops the repeat."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "vigil:" + ":".join(str(p) for p in parts)))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def closed_by(alert: AlertEvent, why: ClosedBy) -> AlertEvent:
    """``alert`` (the incident's own ``alert.closed``, built at its last frame, when vigil stops)
    marked with ``closed_by`` and why."""
    payload = dict(alert.payload)
    payload["closed_by"] = why
    payload["reasons"] = [WHY[why], *payload.get("reasons", [])]
    return AlertEvent(payload=payload, snapshot=alert.snapshot)


def close_left_open(last: AlertEvent) -> AlertEvent:
    """The ``alert.closed`` of an incident whose latest alert is ``last`` but whose fuse is gone:
    the next in its sequence (so built twice, it is one alert), every signal at 0, the frame, media
    time and snapshot of ``last`` (nothing later is known), ``closed_by: restart``."""
    payload: dict[str, Any] = dict(last.payload)
    sequence = int(payload.get("sequence", 0)) + 1
    payload.update(
        {
            "id": stable_id(payload["incident_id"], sequence),
            "event": "alert.closed",
            "sequence": sequence,
            "score": 0.0,
            "signals": {name: {**signal, "value": 0.0} for name, signal in payload.get("signals", {}).items()},
            "new_signals": [],
            "reasons": [WHY["restart"]],
            "wall_time": now_iso(),
            "evidence": {"boxes": [], "transcript": []},
            "closed_by": "restart",
        }
    )
    return AlertEvent(payload=payload, snapshot=last.snapshot)
