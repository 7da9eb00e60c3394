from __future__ import annotations

import pytest

from pipeline.config import FuseConfig, SignalWeights
from stages.fusion.incident import IncidentMachine, fuse_score
from stages.fusion.signals import SignalReading


def reading(name: str, value: float) -> SignalReading:
    return SignalReading(name, value, {}, "")


def test_noisy_or_score_matches_the_documented_formula():
    weights = SignalWeights(zone=0.7, count=0.5, keyword=0.9, loudness=0.4)
    assert fuse_score([reading("zone", 0), reading("keyword", 0)], weights) == 0.0
    assert fuse_score([reading("zone", 1)], weights) == pytest.approx(0.7)
    both = fuse_score([reading("zone", 1), reading("keyword", 1)], weights)
    assert both == pytest.approx(1 - 0.3 * 0.1)
    assert fuse_score([reading(n, 1) for n in ("zone", "count", "keyword", "loudness")], weights) < 1.0


def run(machine: IncidentMachine, timeline: list[tuple[float, float, list[str]]]) -> list[tuple[str, float]]:
    events = []
    for pts, score, active in timeline:
        event = machine.step(pts, score, active)
        if event:
            events.append((event.event, pts))
    return events


SETTINGS = FuseConfig(min_duration_s=0.5, close_after_s=1.0, cooldown_s=5.0)


def test_one_incident_is_one_open_and_one_close_despite_flicker():
    timeline = [(t / 10, 0.7 if (t < 40 and t % 7) else 0.0, ["zone"]) for t in range(0, 80)]
    events = run(IncidentMachine(SETTINGS), timeline)
    assert [e for e, _ in events] == ["alert.opened", "alert.closed"]
    assert events[0][1] == pytest.approx(0.6)  # 0.1 .. 0.6 high for 0.5 s (t=0.0 scored low)


def test_brief_spike_shorter_than_min_duration_opens_nothing():
    timeline = [(0.0, 0.9, ["zone"]), (0.2, 0.9, ["zone"]), (0.4, 0.1, [])]
    assert run(IncidentMachine(SETTINGS), timeline) == []


def test_new_signal_joining_an_open_incident_sends_an_update():
    machine = IncidentMachine(SETTINGS)
    timeline = [(t / 10, 0.7, ["zone"]) for t in range(0, 10)] + [(1.0, 0.97, ["keyword", "zone"])]
    events = run(machine, timeline)
    assert [e for e, _ in events] == ["alert.opened", "alert.updated"]
    assert machine.incident is not None and machine.incident.signals == {"zone", "keyword"}


def test_cooldown_blocks_the_same_signal_but_not_a_new_one():
    machine = IncidentMachine(SETTINGS)
    high = [(t / 10, 0.7, ["zone"]) for t in range(0, 10)]
    low = [(1.0 + t / 10, 0.0, []) for t in range(0, 12)]
    again = [(2.2 + t / 10, 0.7, ["zone"]) for t in range(0, 10)]
    keyword = [(3.2 + t / 10, 0.9, ["keyword"]) for t in range(0, 10)]
    events = run(machine, high + low + again + keyword)
    assert [e for e, _ in events] == ["alert.opened", "alert.closed", "alert.opened"]
    assert events[-1][1] > 3.2  # opened by the keyword, not by the zone in cooldown


def test_an_escalating_score_sends_an_update_once_per_step_up():
    machine = IncidentMachine(SETTINGS)  # escalate_by 0.15
    timeline = [(t / 10, 0.6, ["count"]) for t in range(0, 10)]  # opens at 0.6
    timeline += [(1.0 + t / 10, 0.7, ["count"]) for t in range(5)]  # +0.10: not enough
    timeline += [(1.5 + t / 10, 0.8, ["count"]) for t in range(5)]  # +0.20: one update
    timeline += [(2.0 + t / 10, 0.9, ["count"]) for t in range(5)]  # +0.10 over the last report: none
    events = run(machine, timeline)
    assert events == [("alert.opened", pytest.approx(0.5)), ("alert.updated", pytest.approx(1.5))]
