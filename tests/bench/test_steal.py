from __future__ import annotations

import time

from bench.steal import StealMeter, cpu_ticks

STAT = "cpu  {user} 10 200 5000 7 0 3 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2 3\n"


def test_steal_is_read_from_the_all_cpus_line_as_a_share_of_every_tick() -> None:
    assert cpu_ticks(STAT.format(user=1000, steal=80)) == (80, 1000 + 10 + 200 + 5000 + 7 + 0 + 3 + 80)


def test_a_kernel_without_a_steal_column_reports_none() -> None:
    assert cpu_ticks("cpu  1 2 3 4\n") is None
    assert cpu_ticks("intr 1 2\n") is None


def test_the_meter_reads_this_machine_and_reports_a_share_between_0_and_100() -> None:
    meter = StealMeter()
    busy_until = time.monotonic() + 0.3
    while time.monotonic() < busy_until:  # some ticks pass
        pass
    stolen = meter.percent()
    assert stolen is not None and 0.0 <= stolen <= 100.0
