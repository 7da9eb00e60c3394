"""The fusion rule and the incident state machine.

Score (noisy-OR): ``score = 1 - prod(1 - w_i * v_i)`` over the signals ``i`` (zone, count, keyword,
loudness), with ``v_i`` in 0..1 and weights ``w_i`` from the config. One strong signal is enough to
reach its weight; independent signals reinforce each other without ever exceeding 1.

Hysteresis: an incident opens when the score stays at or above ``open_threshold`` for
``min_duration_s`` (see cooldown below); it closes when the score stays below
``close_threshold`` for ``close_after_s``; then each signal of that incident cools down for
``cooldown_s``: during that time only a signal that was not part of it (a spoken keyword after a
zone intrusion, say) can open a new incident.
Events: ``alert.opened`` once, ``alert.updated`` whenever a signal joins that the incident had not
seen or the score escalates (rises ``escalate_by`` above the score last reported), ``alert.closed``
once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.config import FuseConfig, SignalWeights
from stages.fusion.signals import SignalReading


def fuse_score(readings: Sequence[SignalReading], weights: SignalWeights) -> float:
    miss = 1.0
    for reading in readings:
        weight = float(getattr(weights, reading.name))
        miss *= 1.0 - weight * max(0.0, min(1.0, reading.value))
    return 1.0 - miss


@dataclass(frozen=True)
class IncidentEvent:
    event: str  # alert.opened | alert.updated | alert.closed
    incident_start: float
    pts: float
    score: float
    sequence: int
    new_signals: tuple[str, ...]
    peak: float


@dataclass
class Incident:
    start: float
    signals: set[str] = field(default_factory=set)
    peak: float = 0.0
    events: int = 0
    reported: float = 0.0  # the score the last event carried


@dataclass
class IncidentMachine:
    settings: FuseConfig
    incident: Incident | None = None
    high_since: float | None = None
    low_since: float | None = None
    cooldown_until: dict[str, float] = field(default_factory=dict)

    def step(self, pts: float, score: float, active: Sequence[str]) -> IncidentEvent | None:
        s = self.settings
        if self.incident is None:
            fresh = [name for name in active if pts >= self.cooldown_until.get(name, -math.inf)]
            if score < s.open_threshold or not fresh:
                self.high_since = None
                return None
            if self.high_since is None:
                self.high_since = pts
            if pts - self.high_since < s.min_duration_s:
                return None
            self.incident = Incident(start=self.high_since, signals=set(active), peak=score)
            self.low_since = None
            return self._event("alert.opened", pts, score, tuple(sorted(active)))
        incident = self.incident
        incident.peak = max(incident.peak, score)
        if score < s.close_threshold:
            if self.low_since is None:
                self.low_since = pts
            if pts - self.low_since >= s.close_after_s:
                return self.close(pts, score)
            return None
        self.low_since = None
        joined = tuple(sorted(set(active) - incident.signals))
        if joined:
            incident.signals.update(joined)
            return self._event("alert.updated", pts, score, joined)
        if score >= incident.reported + s.escalate_by:
            return self._event("alert.updated", pts, score, ())
        return None

    def close(self, pts: float, score: float) -> IncidentEvent | None:
        if self.incident is None:
            return None
        event = self._event("alert.closed", pts, score, ())
        for name in self.incident.signals:
            self.cooldown_until[name] = pts + self.settings.cooldown_s
        self.incident = None
        self.high_since = None
        return event

    def _event(self, name: str, pts: float, score: float, new: tuple[str, ...]) -> IncidentEvent:
        assert self.incident is not None
        self.incident.events += 1
        self.incident.reported = score
        return IncidentEvent(name, self.incident.start, pts, score, self.incident.events, new, self.incident.peak)
