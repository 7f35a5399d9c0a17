"""The pure parts of `bench.paired`: splitting its argv, the round order, what an older
harness lacks, which harness a tree has, reading figures back, and the median/ratio table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench import paired, paired_plot
from bench.paired import BENCH, PROFILE, Row, Target


def test_split_argv_bench_args_after_the_double_dash() -> None:
    own, target = paired.split_argv(["--baseline", "main", "--", "--quick", "--only", "latency"])
    assert own == ["--baseline", "main"]
    assert target == Target(BENCH, ("--quick", "--only", "latency"))
    assert target.command(Path("/o")) == [
        "-m",
        "bench",
        "--quick",
        "--only",
        "latency",
        "--out",
        "/o",
    ]


def test_split_argv_profile() -> None:
    argv = ["--baseline", "HEAD~3", "--rounds", "1", "--", "profile", "--rate", "500"]
    argv.append("--cost-only")
    own, target = paired.split_argv(argv)
    assert own == ["--baseline", "HEAD~3", "--rounds", "1"]
    assert target.kind == PROFILE
    assert target.args == ("--rate", "500", "--cost-only")
    assert target.command(Path("/r.json"))[:2] == ["-m", "bench.profile"]
    # A revision from before the bench moved to the top level runs its tests.bench.
    assert target.command(Path("/r.json"), "tests.bench")[:2] == ["-m", "tests.bench.profile"]
    assert target.command(Path("/r.json"))[-2:] == ["--json", "/r.json"]


def test_split_argv_without_target_runs_the_whole_bench() -> None:
    assert paired.split_argv(["--baseline", "x"]) == (["--baseline", "x"], Target(BENCH, ()))
    assert paired.split_argv(["--baseline", "x", "--", "bench", "--quick"])[1] == Target(
        BENCH, ("--quick",)
    )


def test_rounds_alternate_which_side_goes_first() -> None:
    assert paired.orders(3) == [("new", "baseline"), ("baseline", "new"), ("new", "baseline")]
    assert paired.orders(0) == []


def test_options_and_scenarios_asked_for() -> None:
    target = Target(BENCH, ("--quick", "--only=floor,ordered", "--fetch-wait", "0"))
    assert target.options() == ["--quick", "--only", "--fetch-wait"]
    assert target.scenarios() == ["floor", "ordered"]
    assert Target(BENCH, ("--only", "latency,max")).scenarios() == ["latency", "max"]


def test_unsupported_names_missing_options_and_scenarios() -> None:
    help_text = "usage: ... --quick --only ONLY --out OUT"
    source = 'everything = {"floor", "max", "latency"}'
    target = Target(BENCH, ("--quick", "--only", "latency,ordered", "--fetch-wait", "0"))
    assert paired.unsupported(target, help_text, source) == [
        "option --fetch-wait",
        "scenario ordered",
    ]
    assert paired.unsupported(Target(BENCH, ("--only", "max")), help_text, source) == []
    # A profile has no scenarios; its options are checked against its own --help.
    assert paired.unsupported(Target(PROFILE, ("--rate", "5")), "--rate R", "") == []


def test_bench_figures_top_level_and_scenario_spans_without_repeats() -> None:
    p99 = {"median": 20.0, "min": 18.0, "max": 25.0}
    results: dict[str, Any] = {
        "quick": True,
        "lane_concurrency": 64,
        "void_runs": 0,
        "elapsed_s": 100.0,
        "ledger_balanced": True,
        "started_at": "2026-12-01T00:00:00Z",
        "floor_deliveries_per_s": 3588.0,
        "p99_ms_at_500": 20.0,
        "isolation_p99_ratio": None,
        "spans": {"p99_ms_at_500": p99},
        "scenarios": {
            "latency_sqlite": {
                "events_per_s": 500.0,
                "p50_ms": {"median": 9.5, "min": 9.0, "max": 10.0},
                "p99_ms": dict(p99),
                "cpu_us_per_delivery": {"median": None, "min": None, "max": None},
                "runs": [{"void": False}],
            }
        },
    }
    assert paired.bench_figures(results) == {
        "floor_deliveries_per_s": 3588.0,
        "p99_ms_at_500": 20.0,
        "latency_sqlite.p50_ms": 9.5,
    }


def test_profile_figures_from_json_leave_out_settings_and_nan() -> None:
    result = {
        "rate": 500.0,
        "seconds": 20.0,
        "store": "sqlite",
        "cpu_us_per_delivery": 993.0,
        "deliveries_per_s": 499.5,
        "owed_at_end": 3,
        "p99_ms": float("nan"),
        "drained_after_s": None,
        "ledger_balanced": True,
    }
    assert paired.profile_figures(result) == {
        "cpu_us_per_delivery": 993.0,
        "deliveries_per_s": 499.5,
        "owed_at_end": 3.0,
    }


def test_parse_profile_line_of_an_older_profile() -> None:
    stdout = (
        "noise\n1,000 ev/s for 20 s on sqlite: service CPU 76% of a core, 1,635 us per delivery "
        "(12% of it in the kernel), owed 4 at the end, ledger balanced: True\n"
    )
    assert paired.parse_profile_line(stdout) == {
        "cpu_share_of_core": 0.76,
        "cpu_us_per_delivery": 1635.0,
        "kernel_share_of_cpu": 0.12,
        "owed_at_end": 4.0,
        "lag_s_at_end": 0.004,
        "ledger_balanced": True,
    }
    assert paired.parse_profile_line("Traceback ...") is None


def test_build_rows_medians_and_ratio() -> None:
    new = [{"cpu": 700.0, "rate": 500.0}, {"cpu": 900.0, "rate": 499.0}, {"cpu": 800.0}]
    old = [{"cpu": 1000.0, "rate": 500.0}, {"cpu": 1200.0, "old_only": 1.0}]
    rows = paired.build_rows(new, old)
    assert [r.figure for r in rows] == ["cpu", "rate", "old_only"]
    cpu, rate, old_only = rows
    assert (cpu.new, cpu.baseline, cpu.new_runs, cpu.baseline_runs) == (800.0, 1100.0, 3, 2)
    assert cpu.ratio == pytest.approx(800 / 1100)
    assert (rate.new, rate.baseline) == (499.5, 500.0)
    assert rate.ratio == pytest.approx(0.999)
    assert (old_only.new, old_only.ratio) == (None, None)


def test_ratio_undefined_for_a_zero_baseline() -> None:
    assert Row("owed", 3.0, 0.0, 1, 1).ratio is None
    assert Row("owed", 0.0, 3.0, 1, 1).ratio == 0.0


def test_markdown_table() -> None:
    rows = [Row("cpu_us_per_delivery", 800.0, 1100.0, 3, 3), Row("p50_ms", 4.25, None, 3, 0)]
    assert paired.markdown(rows, "abc", "main = def") == "\n".join(
        [
            "| figure | new (abc) | baseline (main = def) | new / baseline |",
            "|---|---:|---:|---:|",
            "| cpu_us_per_delivery | 800 | 1,100 | 0.73x |",
            "| p50_ms | 4.25 | — | — |",
        ]
    )


def test_a_current_harness_side_runs_beside_the_baseline_service_with_todays_bench(
    tmp_path: Path,
) -> None:
    worktree = tmp_path / "abc123"
    (worktree / "service").mkdir(parents=True)
    folder = paired.service_only(worktree)
    assert paired.service_only(worktree) == folder  # made once, reused
    side = paired.Side("baseline", "abc", folder, bench_from=paired.ROOT)
    # Run in the folder (`-m` puts it first: its `service`), today's bench from the path.
    assert side.env()["PYTHONPATH"].split(os.pathsep) == [str(folder), str(paired.ROOT)]
    assert side.homes() == ((worktree / "service").resolve(), paired.ROOT)
    assert side.package == "bench"
    own = paired.Side("baseline", "abc", worktree)
    assert own.env()["PYTHONPATH"] == str(worktree)
    assert own.homes() == (worktree, worktree)


def test_a_side_s_own_harness_is_bench_at_the_top_level_or_an_older_tests_bench(
    tmp_path: Path,
) -> None:
    older, newer = tmp_path / "older", tmp_path / "newer"
    (older / "tests" / "bench").mkdir(parents=True)
    (older / "tests" / "bench" / "__main__.py").write_text("")
    (newer / "bench").mkdir(parents=True)
    (newer / "bench" / "__main__.py").write_text("")
    assert paired.Side("baseline", "old", older).package == "tests.bench"
    assert paired.Side("baseline", "old", older).harness_main() == (
        older / "tests" / "bench" / "__main__.py"
    )
    assert paired.Side("baseline", "new", newer).package == "bench"
    assert paired.Side("new", "today", paired.ROOT).harness_main() == (
        paired.ROOT / "bench" / "__main__.py"
    )


def test_paired_plot_takes_the_asked_figures_in_order_with_a_profile_s_rate() -> None:
    bench = {
        "target": {"kind": "bench", "args": ["--quick"]},
        "table": [
            {"figure": "p50_ms_at_50", "ratio": 0.55},
            {"figure": "floor_deliveries_per_s", "ratio": None},
        ],
    }
    profile = {
        "target": {"kind": "profile", "args": ["--rate", "500", "--cost-only"]},
        "table": [{"figure": "cpu_us_per_delivery", "ratio": 0.68}],
    }
    shown = paired_plot.bars(
        [bench, profile], ["cpu_us_per_delivery@500", "p50_ms_at_50", "floor_deliveries_per_s"]
    )
    assert shown == [
        ("cpu_us_per_delivery@500", "CPU per delivery at 500/s", 0.68),
        ("p50_ms_at_50", "p50 latency at 50/s", 0.55),
    ]
