from __future__ import annotations

import time

from bench.steal import StealMeter, cpu_ticks, measured_quietly, with_steal

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


def runs_stolen(*percents: float):
    """Timed runs that report these shares of stolen CPU in turn (other guests' load cannot be made
    on purpose here, so the runs only report it)."""
    shares = iter(percents)
    return lambda: {"fps": 10.0, "cpu_steal_percent": next(shares)}


def test_a_run_with_much_cpu_stolen_is_measured_again_until_one_is_quiet() -> None:
    said: list[str] = []
    result = measured_quietly(runs_stolen(30.0, 12.0, 1.0, 0.0), 5.0, 3, "pipeline", said.append)
    assert result["cpu_steal_percent"] == 1.0 and result["noisy_runs_repeated"] == 2
    assert said[0] == "pipeline: 30.0 % of the CPU went to other guests; measuring again (1/3)"


def test_the_last_noisy_run_is_kept_when_every_retry_is_noisy_and_none_is_made_without_a_limit() -> None:
    kept = measured_quietly(runs_stolen(30.0, 12.0, 9.0), 5.0, 2, "pipeline", lambda _: None)
    assert kept["cpu_steal_percent"] == 9.0 and kept["noisy_runs_repeated"] == 2
    unlimited = measured_quietly(runs_stolen(30.0), None, 2, "pipeline", lambda _: None)
    assert unlimited["cpu_steal_percent"] == 30.0 and unlimited["noisy_runs_repeated"] == 0


def test_a_timed_run_keeps_its_figures_and_gains_the_share_stolen_while_it_ran() -> None:
    timed = with_steal(lambda: {"fps": 12.5})()
    assert timed["fps"] == 12.5 and 0.0 <= timed["cpu_steal_percent"] <= 100.0
