"""The bench's outputs: var/bench/<timestamp>.json (and latest.json), a table on stdout and in
<timestamp>.md, and a PNG of the latency distributions and the throughput-versus-floor bars.

matplotlib is optional (the `bench` extra): without it the PNG is skipped with a note. It is
imported through importlib so that `mypy` over bench/ passes where the extra is not installed.
"""

from __future__ import annotations

import importlib
import math
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

# The targets the figures are reported against, never asserted: (key, label, comparison, target).
TARGETS: list[tuple[str, str, str, float]] = [
    ("max_deliveries_per_s_sqlite", "max deliveries/s, fan-out 1, SQLite", ">=", 3000),
    ("max_deliveries_per_s_postgres", "max deliveries/s, fan-out 1, PostgreSQL", ">=", 3000),
    (
        "sqlite_share_of_floor",
        "SQLite max as share of the raw floor (floor measured right before each run)",
        ">=",
        0.5,
    ),
    ("p99_ms_at_500", "p99 ms at 500 events/s, fan-out 1 (SQLite)", "<=", 50),
    ("isolation_p99_ratio", "isolation: healthy p99 with / without a hanging one", "<=", 1.2),
    ("backlog_peak_rss_mb", "service peak RSS MB with a 100k backlog", "<=", 250),
    ("cpu_us_per_delivery", "service CPU us per delivery (SQLite, at max rate)", "<=", 250),
]


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def void_runs(node: Any) -> Iterator[bool]:
    """Every run's `void` flag, wherever it sits in the results."""
    if isinstance(node, dict):
        if "void" in node and isinstance(node["void"], bool):
            yield node["void"]
        for value in node.values():
            yield from void_runs(value)
    elif isinstance(node, list):
        for value in node:
            yield from void_runs(value)


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float | int):
        if abs(value) < 10 and digits == 0:
            return f"{value:.2f}"
        return f"{value:,.{digits}f}"
    return str(value)


def _met(value: Any, comparison: str, target: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not run"
    ok = value >= target if comparison == ">=" else value <= target
    return "yes" if ok else "no"


def table(results: dict[str, Any]) -> str:
    """Markdown: headline figures (median, min, max) against the targets."""
    spans: dict[str, dict[str, Any]] = results.get("spans", {})
    lines = [
        "| figure | median | min | max | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    floor = spans.get("floor_deliveries_per_s", {})
    lines.append(
        f"| raw floor deliveries/s (aiohttp client -> receiver) | {_fmt(floor.get('median'))} | "
        f"{_fmt(floor.get('min'))} | {_fmt(floor.get('max'))} | ceiling | — |"
    )
    for key, label, comparison, target in TARGETS:
        span = spans.get(key, {})
        value = results.get(key)
        lines.append(
            f"| {label} | {_fmt(value)} | {_fmt(span.get('min'))} | {_fmt(span.get('max'))} | "
            f"{comparison} {_fmt(float(target))} | {_met(value, comparison, target)} |"
        )
    for key, label in results.get("extra_rows", []):
        span = spans.get(key, {})
        lines.append(
            f"| {label} | {_fmt(results.get(key))} | {_fmt(span.get('min'))} | "
            f"{_fmt(span.get('max'))} | — | — |"
        )
    lines.append(
        f"| ledger balanced in every run | {results['ledger_balanced']} | | | True | "
        f"{'yes' if results['ledger_balanced'] else 'no'} |"
    )
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path, stamp: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stamp}.json"
    data = orjson.dumps(
        results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    )
    path.write_bytes(data)
    (out / "latest.json").write_bytes(data)
    markdown = table(results)
    (out / f"{stamp}.md").write_text(markdown + "\n")
    (out / "latest.md").write_text(markdown + "\n")
    return path


def _series(results: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """Latency samples (ms) worth drawing: one series per scenario, the runs pooled."""
    scenarios: dict[str, Any] = results.get("scenarios", {})
    out: list[tuple[str, list[float]]] = []
    for store in ("sqlite", "postgres"):
        latency = scenarios.get(f"latency_{store}")
        if latency:
            counted = [r for r in latency["runs"] if not r["void"]]
            pooled = [x for run in counted for x in run.get("latencies_ms", [])]
            out.append((f"500 ev/s fan-out 1, {store}", pooled))
    for store in ("sqlite", "postgres"):
        found = scenarios.get(f"max_{store}")
        if found and found.get("confirm"):
            counted = [r for r in found["confirm"] if r["kept_up"] and not r["void"]]
            pooled = [x for run in counted for x in run.get("latencies_ms", [])]
            out.append((f"max sustained rate, {store}", pooled))
    isolation = scenarios.get("isolation")
    if isolation:
        for key, label in (("with_hang", "9 healthy + 1 hanging"), ("without", "9 healthy")):
            counted = [p for p in isolation["pairs"] if p["counted"]]
            pooled = [x for pair in counted for x in pair[key].get("latencies_ms", [])]
            out.append((f"isolation: {label}", pooled))
    return [(label, values) for label, values in out if values]


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Draws the PNG; returns why not when it cannot."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no PNG"
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    for label, values in _series(results):
        ordered = sorted(values)
        n = len(ordered)
        left.plot(ordered, [(i + 1) / n for i in range(n)], label=f"{label} (n={n:,})")
    left.set_xscale("log")
    left.xaxis.set_major_formatter(importlib.import_module("matplotlib.ticker").ScalarFormatter())
    left.set_xlabel("scheduled send -> arrival at the receiver (ms, log)")
    left.set_ylabel("share of deliveries")
    left.set_title("latency distributions (CDF)")
    left.axvline(50, color="grey", linestyle=":", linewidth=1)
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, loc="lower right")

    spans: dict[str, dict[str, Any]] = results.get("spans", {})
    bars = [
        ("raw floor", "floor_deliveries_per_s"),
        ("SQLite\nfan-out 1", "max_deliveries_per_s_sqlite"),
        ("PostgreSQL\nfan-out 1", "max_deliveries_per_s_postgres"),
        ("SQLite\nfan-out 10", "max_deliveries_per_s_fanout10"),
        ("SQLite, shipped\nsettings (ramp)", "max_deliveries_per_s_sqlite_default_lanes"),
    ]
    shown = [(label, spans[key]) for label, key in bars if spans.get(key, {}).get("median")]
    medians = [span["median"] for _, span in shown]
    low = [span["median"] - span["min"] for _, span in shown]
    high = [span["max"] - span["median"] for _, span in shown]
    right.bar([label for label, _ in shown], medians, yerr=[low, high], capsize=5)
    floor = spans.get("floor_deliveries_per_s", {}).get("median")
    if floor:
        right.axhline(floor * 0.5, color="red", linestyle="--", label="50% of the floor")
    right.axhline(3000, color="green", linestyle=":", label="3,000/s target")
    right.set_ylabel("deliveries/s (median; bars: min-max)")
    right.set_title("throughput versus the raw floor")
    right.legend(fontsize=8)
    stamp = results.get("started_at", "")
    figure.suptitle(
        f"identity-webhooks bench {stamp} ({'quick' if results.get('quick') else 'full'})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
