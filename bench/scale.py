"""`python -m bench.scale` (`make bench-scale`): how the service's costs grow with the platform.

Three curves, each point a child run of another bench module, in alternating rounds:

- **subscriptions**: `bench.index_scale` at `--subscriptions` (default 1k, 10k, 100k): one API
  change's time and the event loop's longest stall meanwhile, the first load, peak RSS;
- **open deliveries**: `bench.profile` at 500 events/s for one healthy subscription beside a
  backlog of `--backlogs` (default 0, 100k, 1M) open deliveries owed to dead endpoints
  (`bench.backlog`), on each of `--stores`: CPU per delivery, p50 and p99;
- **history** (PostgreSQL, when `python -m bench.history seed` has made its database): the
  tables' sizes, the purge's rows a second (`bench.history purge`), and `bench.profile` at 500
  events/s with the retention purging (`--history-retention-days`, a day less each round) beside
  the same without (a retention longer than the history).

Writes var/bench/scale-<timestamp>.json, a Markdown table beside it (.md) and a plot (.png,
matplotlib from the `bench` extra). Takes about an hour with the defaults; seeding a backlog
template the first time takes minutes more (`bench.backlog` keeps it). The code before a
change is measured with `bench.paired` (docs/performance.md shows both).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import history
from bench.stack import VAR

RATE = "500"
SECONDS = "20"
FIGURES = ("cpu_us_per_delivery", "p50_ms", "p99_ms", "deliveries_per_s")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--subscriptions", default="1000,10000,100000")
    parser.add_argument("--backlogs", default="0,100000,1000000")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", default="", help="curves to leave out: index,backlog,history")
    return parser


def _child(module: str, *args: str, out: Path) -> dict[str, Any]:
    """Runs `python -m module args --json out` and returns what it wrote."""
    command = [sys.executable, "-m", module, *args, "--json", str(out)]
    print("  $", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return dict(orjson.loads(out.read_bytes()))


def _median(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        name: statistics.median(float(run[name]) for run in runs)
        for name in FIGURES
        if all(run.get(name) is not None for run in runs)
    }


def index_curve(sizes: str, folder: Path) -> dict[str, Any]:
    return _child("bench.index_scale", "--sizes", sizes, out=folder / "index.json")


def backlog_curve(stores: list[str], backlogs: list[int], rounds: int, folder: Path) -> Any:
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for n in range(rounds):
        order = backlogs if n % 2 == 0 else list(reversed(backlogs))
        for store in stores:
            for size in order:
                out = folder / f"backlog-{store}-{size}-r{n + 1}.json"
                args = ["--rate", RATE, "--seconds", SECONDS, "--cost-only", "--store", store]
                runs.setdefault((store, size), []).append(
                    _child("bench.profile", *args, "--backlog", str(size), out=out)
                )
    return [
        {"store": store, "backlog": size, **_median(found)}
        for (store, size), found in sorted(runs.items())
    ]


def history_curve(rounds: int, folder: Path) -> dict[str, Any] | None:
    if not history.STATE.exists():
        print("  no history database (python -m bench.history seed): skipped", flush=True)
        return None
    seeded = history.state()
    before = _history_sizes(folder / "history-sizes-before.json")
    without: list[dict[str, Any]] = []
    during: list[dict[str, Any]] = []
    days = float(seeded["days"])
    args = ["--rate", RATE, "--seconds", SECONDS, "--cost-only", "--store", "postgres"]
    for n in range(rounds):
        days -= 1  # each purging run has a day more to delete
        pair = [("without", days + 400), ("during", days)]
        for name, retention in pair if n % 2 == 0 else reversed(pair):
            out = folder / f"history-{name}-r{n + 1}.json"
            run = _child(
                "bench.profile", *args, "--history-retention-days", str(retention), out=out
            )
            (without if name == "without" else during).append(run)
    purge = _child(
        "bench.history", "purge", "--retention-days", str(days - 1), out=folder / "purge.json"
    )
    return {
        "deliveries": seeded["deliveries"],
        "days": seeded["days"],
        "sizes_before": before,
        "sizes_after": _history_sizes(folder / "history-sizes-after.json"),
        "without_purge": _median(without),
        "during_purge": _median(during),
        "purge": purge,
    }


def _history_sizes(out: Path) -> Any:
    return _child("bench.history", "sizes", out=out)


def table(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if index := result.get("index"):
        lines += [
            "| subscriptions | API change p50 ms | its longest stall ms | first load ms | its "
            "longest stall ms | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in index["results"]:
            lines.append(
                f"| {row['subscriptions']:,} | {row['change_p50_ms']:.1f} | "
                f"{row['change_stall_max_ms']:.1f} | {row['full_load_ms']:,.0f} | "
                f"{row['full_load_stall_ms']:,.0f} | {row['peak_rss_mb']:,.0f} |"
            )
        lines.append("")
    if backlog := result.get("backlog"):
        lines += [
            "| store | open deliveries | CPU µs per delivery | p50 ms | p99 ms | deliveries/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in backlog:
            lines.append(
                f"| {row['store']} | {row['backlog']:,} | {row['cpu_us_per_delivery']:,.0f} | "
                f"{row['p50_ms']:,.1f} | {row['p99_ms']:,.1f} | {row['deliveries_per_s']:,.0f} |"
            )
        lines.append("")
    if found := result.get("history"):
        lines += [
            f"History: {found['deliveries']:,} delivered deliveries over {found['days']:g} days.",
            "",
            "| at 500 events/s | CPU µs per delivery | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for name in ("without_purge", "during_purge"):
            row = found[name]
            lines.append(
                f"| {name.replace('_', ' ')} | {row['cpu_us_per_delivery']:,.0f} | "
                f"{row['p50_ms']:,.1f} | {row['p99_ms']:,.1f} |"
            )
        purge = found["purge"]
        lines += [
            "",
            f"Purge: {purge['rows_per_s']:,} rows/s, a batch p50 {purge['batch_ms_p50']} ms, "
            f"p99 {purge['batch_ms_p99']} ms, max {purge['batch_ms_max']} ms.",
            "",
            "| table | total MB before | after |",
            "|---|---:|---:|",
        ]
        for name, size in found["sizes_before"].items():
            after = found["sizes_after"][name]["total"]
            lines.append(f"| {name} | {size['total'] / 2**20:,.0f} | {after / 2**20:,.0f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], out: Path) -> None:
    try:
        pyplot = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        print("  matplotlib is not installed (the bench extra): no plot", flush=True)
        return
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4))
    if index := result.get("index"):
        rows = index["results"]
        sizes = [row["subscriptions"] for row in rows]
        left.plot(sizes, [row["change_p50_ms"] for row in rows], "o-", label="change p50")
        left.plot(sizes, [row["change_stall_max_ms"] for row in rows], "s-", label="its stall")
        left.set_xscale("log")
        left.set_xlabel("active subscriptions")
        left.set_ylabel("ms")
        left.set_title("one API change")
        left.legend()
    for store in sorted({row["store"] for row in result.get("backlog") or []}):
        rows = [row for row in result["backlog"] if row["store"] == store]
        sizes = [max(row["backlog"], 1) for row in rows]
        right.plot(sizes, [row["p99_ms"] for row in rows], "o-", label=f"{store} p99 ms")
        cpu = [row["cpu_us_per_delivery"] / 10 for row in rows]
        right.plot(sizes, cpu, "s--", label=f"{store} CPU µs/10")
    right.set_xscale("log")
    right.set_xlabel("open deliveries owed to dead endpoints (0 drawn at 1)")
    right.set_title("500 events/s beside a backlog")
    right.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    args = _parser().parse_args()
    skip = set(args.skip.split(",")) - {""}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = VAR / f"scale-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"stamp": stamp}
    if "index" not in skip:
        print("subscriptions:", flush=True)
        result["index"] = index_curve(args.subscriptions, folder)
    if "backlog" not in skip:
        print("open deliveries:", flush=True)
        stores = args.stores.split(",")
        backlogs = [int(n) for n in args.backlogs.split(",")]
        result["backlog"] = backlog_curve(stores, backlogs, args.rounds, folder)
    if "history" not in skip:
        print("history:", flush=True)
        result["history"] = history_curve(args.rounds, folder)
    base = VAR / f"scale-{stamp}"
    base.with_suffix(".json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    text = table(result)
    base.with_suffix(".md").write_text(text)
    plot(result, base.with_suffix(".png"))
    print(text)
    print(f"results: {base}.json, .md, .png")


if __name__ == "__main__":
    main()
