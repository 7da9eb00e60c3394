"""CPU time the hypervisor took for other guests while a benchmark ran (``steal`` in /proc/stat).

On a shared virtual machine the same run can take twice as long when the host is busy; a figure
measured while a fifth of the CPU was stolen says more about the neighbours than about vigil. Each
timed run records the share stolen, the bench measures a run again when the share was large
(``--max-steal``), and the report says when it stayed large.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")
NOISY_PERCENT = 5.0  # above this, the report warns that the figures are the host's as much as vigil's


def cpu_ticks(stat_text: str) -> tuple[int, int] | None:
    """(steal, all) clock ticks of every CPU together from /proc/stat's text; None without a steal column."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(value) for value in fields[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
            return (ticks[7], sum(ticks[:8])) if len(ticks) >= 8 else None
    return None


def read_ticks() -> tuple[int, int] | None:
    try:
        return cpu_ticks(PROC_STAT.read_text())
    except OSError:  # not Linux
        return None


@dataclass
class StealMeter:
    """``meter.percent()``: the share of all CPU time stolen since the meter was made (None where
    the system does not say)."""

    began: tuple[int, int] | None = field(default_factory=read_ticks)

    def percent(self) -> float | None:
        now = read_ticks()
        if self.began is None or now is None:
            return None
        steal, every = now[0] - self.began[0], now[1] - self.began[1]
        return round(100 * steal / every, 1) if every > 0 else 0.0


def with_steal(run: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``run``, its result with the share of CPU stolen while it ran (``cpu_steal_percent``)."""

    def timed() -> dict[str, Any]:
        stolen = StealMeter()
        return {**run(), "cpu_steal_percent": stolen.percent()}

    return timed


def measured_quietly(
    run: Callable[[], dict[str, Any]], max_steal: float | None, retries: int, what: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """``run()`` (a timed run whose result holds its ``cpu_steal_percent``), measured again up to
    ``retries`` times while other guests took more than ``max_steal`` % of the CPU (None: never).
    The result says how many runs were thrown away (``noisy_runs_repeated``); the last one is kept
    when every try was noisy."""
    result = run()
    repeated = 0
    while max_steal is not None and repeated < retries and (result.get("cpu_steal_percent") or 0.0) > max_steal:
        repeated += 1
        stolen = result["cpu_steal_percent"]
        log(f"{what}: {stolen} % of the CPU went to other guests; measuring again ({repeated}/{retries})")
        result = run()
    return {**result, "noisy_runs_repeated": repeated}
