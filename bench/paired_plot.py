"""`python -m bench.paired_plot RESULT.json… --out FILE.png [--only FIGURE,…]`: one chart of
several `bench.paired` results: for each figure, today's median as a share of the
baseline's (the ratio targets speak in), one bar per figure, with a target mark
where `--target FIGURE=RATIO` gives one. Needs matplotlib (the `bench` extra).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

# Figures a reader knows by another name.
LABELS = {
    "cpu_us_per_delivery": "CPU per delivery at the max rate",
    "max_deliveries_per_s_sqlite": "max deliveries/s, SQLite",
    "max_deliveries_per_s_postgres": "max deliveries/s, PostgreSQL",
    "sqlite_share_of_floor": "SQLite max / raw floor",
    "floor_deliveries_per_s": "raw floor deliveries/s",
    "cpu_us_per_delivery_at_50": "CPU per delivery at 50/s",
    "p50_ms_at_50": "p50 latency at 50/s",
    "p99_ms_at_50": "p99 latency at 50/s",
}
# A profile's figures, at its `--rate`.
PROFILE_LABELS = {
    "cpu_us_per_delivery": "CPU per delivery",
    "p50_ms": "p50 latency",
    "p99_ms": "p99 latency",
}


# Figures where more is better (everything else here is a cost: CPU, latency).
HIGHER_IS_BETTER = ("max_deliveries", "share_of_floor", "floor_deliveries", "deliveries_per_s")


def better(key: str, ratio: float) -> bool:
    return ratio > 1 if any(part in key for part in HIGHER_IS_BETTER) else ratio < 1


def bars(results: Sequence[Mapping[str, Any]], only: Sequence[str]) -> list[tuple[str, str, float]]:
    """(key, label, new / baseline) per wanted figure found, in the order asked; a profile's
    figures get their rate in the key and the label."""
    found: dict[str, tuple[str, str, float]] = {}
    for result in results:
        args = list(result["target"]["args"])
        rate = args[args.index("--rate") + 1] if "--rate" in args else None
        for row in result["table"]:
            if row["ratio"] is None:
                continue
            key = row["figure"] if rate is None else f"{row['figure']}@{rate}"
            if rate is None:
                shown = LABELS.get(row["figure"], row["figure"])
            else:
                shown = f"{PROFILE_LABELS.get(row['figure'], row['figure'])} at {rate}/s"
            found[key] = (key, shown, float(row["ratio"]))
    return [found[key] for key in only if key in found]


def plot(
    results: Sequence[Mapping[str, Any]],
    only: Sequence[str],
    targets: Mapping[str, float],
    title: str,
    path: Path,
) -> None:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    shown = bars(results, only)[::-1]  # the first asked at the top
    figure, axes = plt.subplots(figsize=(11, 0.55 * len(shown) + 1.6))
    labels = [label for _, label, _ in shown]
    ratios = [ratio for _, _, ratio in shown]
    colours = ["#2a7" if better(key, ratio) else "#c44" for key, _, ratio in shown]
    axes.barh(labels, ratios, color=colours)
    for y, ratio in enumerate(ratios):
        axes.text(ratio + 0.01, y, f"{ratio:.2f}x", va="center", fontsize=9)
    for y, (key, _, _) in enumerate(shown):
        if key in targets:
            axes.plot([targets[key]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_xlim(0, max(1.2, max(ratios, default=1) + 0.15))
    axes.set_xlabel("today / baseline; green: better (costs lower, throughput higher); black: goal")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paired_plot")
    parser.add_argument("results", nargs="+", type=Path, help="paired-<timestamp>.json files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--only",
        required=True,
        help="figures in order, comma-separated; a profile's as FIGURE@RATE "
        "(cpu_us_per_delivery@50)",
    )
    parser.add_argument("--target", action="append", default=[], help="FIGURE=RATIO")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    results = [orjson.loads(path.read_bytes()) for path in args.results]
    targets = {k: float(v) for k, v in (t.split("=", 1) for t in args.target)}
    plot(results, args.only.split(","), targets, args.title, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
