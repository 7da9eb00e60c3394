"""Incidents fuse cannot finish itself get their alert.closed all the same, saying why."""

from __future__ import annotations

from pipeline.messages import AlertEvent
from stages.fusion.unfinished import close_left_open, closed_by, stable_id

UPDATED = {
    "id": stable_id("inc-1", 2),
    "incident_id": "inc-1",
    "event": "alert.updated",
    "sequence": 2,
    "camera": "yard",
    "score": 0.94,
    "signals": {"zone": {"value": 1.0, "weight": 0.7}, "keyword": {"value": 1.0, "weight": 0.9}},
    "new_signals": ["keyword"],
    "reasons": ["spoken 'help' at 11.7 s"],
    "media_time": {"incident_start": 10.0, "at": 12.4},
    "evidence": {"boxes": [{"label": "person"}], "transcript": [{"text": "help"}]},
}


def test_an_incident_left_open_by_a_dead_fuse_is_closed_as_the_next_in_its_sequence():
    closing = close_left_open(AlertEvent(payload=UPDATED, snapshot=b"jpeg"))
    payload = closing.payload
    assert (payload["event"], payload["sequence"], payload["incident_id"]) == ("alert.closed", 3, "inc-1")
    assert payload["id"] == stable_id("inc-1", 3) == close_left_open(AlertEvent(UPDATED, b"jpeg")).payload["id"]
    assert payload["score"] == 0.0 and {s["value"] for s in payload["signals"].values()} == {0.0}
    assert payload["signals"]["keyword"]["weight"] == 0.9 and payload["new_signals"] == []
    assert payload["closed_by"] == "restart" and "started again without it" in payload["reasons"][0]
    assert payload["media_time"] == UPDATED["media_time"] and closing.snapshot == b"jpeg", "the last known frame"
    assert UPDATED["event"] == "alert.updated", "the stored alert is left as it was"


def test_an_incident_closed_by_a_stop_says_so_before_its_own_reasons():
    closed = AlertEvent(
        payload={**UPDATED, "event": "alert.closed", "reasons": ["incident over after 2.4 s"]}, snapshot=b"j"
    )
    marked = closed_by(closed, "stop").payload
    assert marked["closed_by"] == "stop"
    assert marked["reasons"] == ["vigil stopped while the incident was open", "incident over after 2.4 s"]
