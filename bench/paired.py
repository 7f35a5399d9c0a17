"""`python -m bench.paired --baseline REV [--rounds N] -- <what to run>`: today's tree beside
REV, alternating, on one machine at one time.

<what to run> is either the arguments of `python -m bench` (`--quick --only latency`; each run
gets its own `--out`) or `profile` and those of `python -m bench.profile`
(`profile --rate 500 --seconds 20 --cost-only`). REV is checked out, detached, in a scratch
worktree under var/baseline/<sha12> (reused when there); its side runs there, with
PYTHONPATH=<worktree>, so its own `service` and harness (and schema migrations) are the ones
imported: `bench`, or `tests.bench` in a revision from before the bench moved to the top level.
With `--harness current`, the baseline side runs today's `bench` against REV's
`service` instead (PYTHONPATH=<a folder holding only REV's service>:<this tree>): the same load,
receiver and figures on both sides, for scenarios REV's own bench lacks (latency at 50 events/s);
it needs REV's store API to be the one today's bench seeds subscriptions with. Both sides use
this interpreter. Each round runs both sides, the order alternating (new-old, old-new, ...) so
that drift on a shared machine falls on both alike.

Prints, and writes to var/bench/paired-<timestamp>.md, a table of every numeric headline figure:
the median over the rounds of each side and new / baseline; var/bench/paired-<timestamp>.json
holds that table and every raw result. A side whose harness lacks an option or a scenario
asked for is skipped, saying so. An older profile without `--json` is read from its printed line.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "bench"
WORKTREES = ROOT / "var" / "baseline"
NEW = "new"
BASELINE = "baseline"
BENCH = "bench"
PROFILE = "profile"
DEFAULT_ROUNDS = {BENCH: 2, PROFILE: 3}
# The harness's package: at the top level today, under tests/ in older revisions.
PACKAGE = "bench"
OLD_PACKAGE = "tests.bench"
# Top-level keys of a bench result that describe the run rather than measure the service.
NOT_FIGURES = frozenset({"lane_concurrency", "void_runs", "elapsed_s", "quick"})
# Keys of a profile result that repeat its arguments.
PROFILE_SETTINGS = frozenset({"rate", "seconds", "lane_concurrency"})
PROFILE_LINE = re.compile(
    r"(?P<rate>[\d,.]+) ev/s for [\d.]+ s on \w+: "
    r"service CPU (?P<share>[\d,.]+)% of a core, (?P<us>[\d,.]+) us per delivery "
    r"\((?P<kernel>[\d,.]+)% of it in the kernel\), owed (?P<owed>-?[\d,]+) at the end, "
    r"ledger balanced: (?P<balanced>True|False)"
)


# -- pure parts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What each side runs: `kind` (bench or profile) and its arguments."""

    kind: str
    args: tuple[str, ...]

    def module(self, package: str = PACKAGE) -> str:
        """The module `python -m` runs, in the harness `package`."""
        return package if self.kind == BENCH else f"{package}.profile"

    def command(self, out: Path, package: str = PACKAGE) -> list[str]:
        """The child's argv after the interpreter; `out` is the bench's folder or profile's JSON."""
        extra = ["--out", str(out)] if self.kind == BENCH else ["--json", str(out)]
        return ["-m", self.module(package), *self.args, *extra]

    def options(self) -> list[str]:
        """The `--options` asked for, without values."""
        return [a.split("=", 1)[0] for a in self.args if a.startswith("--")]

    def scenarios(self) -> list[str]:
        """The scenarios `--only` names (bench only)."""
        found: list[str] = []
        for i, arg in enumerate(self.args):
            if arg == "--only" and i + 1 < len(self.args):
                found += self.args[i + 1].split(",")
            elif arg.startswith("--only="):
                found += arg.removeprefix("--only=").split(",")
        return [s for s in found if s]


def split_argv(argv: Sequence[str]) -> tuple[list[str], Target]:
    """The runner's own arguments (before `--`) and the target (after it)."""
    argv = list(argv)
    if "--" in argv:
        at = argv.index("--")
        own, rest = argv[:at], argv[at + 1 :]
    else:
        own, rest = argv, []
    if rest and rest[0] == PROFILE:
        return own, Target(PROFILE, tuple(rest[1:]))
    if rest and rest[0] == BENCH:
        rest = rest[1:]
    return own, Target(BENCH, tuple(rest))


def orders(rounds: int) -> list[tuple[str, str]]:
    """Which side goes first in each round: new-old, old-new, ..."""
    return [(NEW, BASELINE) if i % 2 == 0 else (BASELINE, NEW) for i in range(rounds)]


def unsupported(target: Target, help_text: str, bench_source: str) -> list[str]:
    """What a side's harness lacks of `target`: options absent from its `--help`, scenarios
    its `__main__.py` does not know."""
    missing = [f"option {o}" for o in target.options() if o not in help_text]
    if target.kind == BENCH:
        missing += [f"scenario {s}" for s in target.scenarios() if f'"{s}"' not in bench_source]
    return missing


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _is_span(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"median", "min", "max"}


def bench_figures(results: Mapping[str, Any]) -> dict[str, float]:
    """A bench result's figures: its numeric top-level keys (each a median over the runs of
    the invocation), then every other {median, min, max} of a scenario as `<scenario>.<key>`
    (latency p50/p95, say), leaving out those the top level already holds."""
    figures: dict[str, float] = {}
    for key, value in results.items():
        number = _number(value)
        if number is not None and key not in NOT_FIGURES:
            figures[key] = number
    known = [span for span in results.get("spans", {}).values() if _is_span(span)]
    for scenario, found in results.get("scenarios", {}).items():
        if not isinstance(found, dict):
            continue
        for key, span in found.items():
            if not _is_span(span) or any(span is k or span == k for k in known):
                continue
            number = _number(span["median"])
            if number is not None:
                figures[f"{scenario}.{key}"] = number
    return figures


def profile_figures(result: Mapping[str, Any]) -> dict[str, float]:
    return {
        key: number
        for key, value in result.items()
        if key not in PROFILE_SETTINGS and (number := _number(value)) is not None
    }


def parse_profile_line(stdout: str) -> dict[str, Any] | None:
    """The figures of the line an older profile (without `--json`) prints."""
    match = PROFILE_LINE.search(stdout)
    if match is None:
        return None

    def num(name: str) -> float:
        return float(match[name].replace(",", ""))

    return {
        "cpu_share_of_core": num("share") / 100,
        "cpu_us_per_delivery": num("us"),
        "kernel_share_of_cpu": num("kernel") / 100,
        "owed_at_end": num("owed"),
        "lag_s_at_end": num("owed") / num("rate") if num("rate") else math.nan,
        "ledger_balanced": match["balanced"] == "True",
    }


@dataclass(frozen=True)
class Row:
    figure: str
    new: float | None  # median over the rounds
    baseline: float | None
    new_runs: int
    baseline_runs: int

    @property
    def ratio(self) -> float | None:
        if self.new is None or self.baseline is None or self.baseline == 0:
            return None
        return self.new / self.baseline


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def build_rows(
    new: Sequence[Mapping[str, float]], baseline: Sequence[Mapping[str, float]]
) -> list[Row]:
    """One row per figure either side reported, in the order first seen (new first): the median
    of each side over its runs and their ratio."""
    names: dict[str, None] = {}
    for figures in [*new, *baseline]:
        names.update(dict.fromkeys(figures))
    rows = []
    for name in names:
        ours = [f[name] for f in new if name in f]
        theirs = [f[name] for f in baseline if name in f]
        rows.append(Row(name, _median(ours), _median(theirs), len(ours), len(theirs)))
    return rows


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value != 0 and abs(value) < 10:
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{value:,.0f}"


def markdown(rows: Sequence[Row], new_label: str, baseline_label: str) -> str:
    lines = [
        f"| figure | new ({new_label}) | baseline ({baseline_label}) | new / baseline |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(f"| {row.figure} | {_fmt(row.new)} | {_fmt(row.baseline)} | {ratio} |")
    return "\n".join(lines)


# -- running --------------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    label: str  # what it runs: a short sha, "working tree"
    root: Path  # where it runs (first on its path: its `service`), and its harness's tree
    skipped: str | None = None  # why this side does not run
    runs: list[dict[str, Any]] = field(default_factory=list)
    bench_from: Path | None = None  # another tree's harness (`--harness current`)

    def env(self) -> dict[str, str]:
        paths = [self.root, self.bench_from] if self.bench_from else [self.root]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}

    def homes(self) -> tuple[Path, Path]:
        """Where its `service` and its harness must come from."""
        if self.bench_from is None:
            return self.root, self.root
        return (self.root / "service").resolve(), self.bench_from

    @property
    def package(self) -> str:
        """Its harness's package: `bench` where the harness's tree has one at the top level,
        `tests.bench` in a revision from before the move."""
        return harness_package(self.homes()[1])

    def harness_main(self) -> Path:
        return self.homes()[1].joinpath(*self.package.split("."), "__main__.py")


def harness_package(tree: Path) -> str:
    """`bench` when `tree` has the harness at the top level, else the older `tests.bench`."""
    return PACKAGE if (tree / PACKAGE / "__main__.py").exists() else OLD_PACKAGE


def service_only(worktree: Path) -> Path:
    """A folder beside `worktree` holding only a link to its `service` package: run there,
    `python -m` finds that `service` first, and the harness (and the service child it starts
    from where its `service` lives) comes from PYTHONPATH."""
    folder = worktree.with_name(worktree.name + "-service")
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "service"
    if not link.is_symlink():
        link.symlink_to(worktree / "service", target_is_directory=True)
    return folder


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def baseline_worktree(sha: str) -> tuple[Path, bool]:
    """The scratch worktree at `sha` (made, or moved to `sha` when there); whether it was there."""
    path = WORKTREES / sha[:12]
    if (path / ".git").exists():
        if git("rev-parse", "HEAD", cwd=path) != sha:
            git("checkout", "--quiet", "--detach", sha, cwd=path)
        return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    git("worktree", "add", "--detach", str(path), sha)
    return path, False


def _python(side: Side, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=side.root,
        env=side.env(),
        capture_output=True,
        text=True,
    )


def check_side(side: Side, target: Target) -> str | None:
    """Why `side` cannot run `target`, or None. Also checks that the child imports the side's own
    code (not the virtualenv's editable install of another tree)."""
    package = side.package
    probe = f"import service, {package}; print(service.__file__); print({package}.__file__)"
    found = _python(side, "-c", probe)
    if found.returncode != 0:
        return f"its packages do not import: {found.stderr.strip()[-500:]}"
    for path, root in zip(found.stdout.split(), side.homes(), strict=False):
        if not Path(path).resolve().is_relative_to(root.resolve()):
            return f"the child imported {path}, not the code under {root}"
    print(f"{side.name} ({side.label}) imports {', '.join(found.stdout.split())}", flush=True)
    module = target.module(package)
    shown = _python(side, "-m", module, "--help")
    if shown.returncode != 0:
        return f"`python -m {module} --help` failed: {shown.stderr.strip()[-500:]}"
    main = side.harness_main()
    source = main.read_text() if main.exists() else ""
    missing = unsupported(target, shown.stdout, source)
    if target.kind == BENCH and "--out" not in shown.stdout:
        missing.append("option --out (the runner's)")
    if missing:
        return f"its {package} lacks {', '.join(missing)}"
    return None


def supports_json(side: Side) -> bool:
    return "--json" in _python(side, "-m", f"{side.package}.profile", "--help").stdout


def run_once(side: Side, target: Target, out: Path, round_no: int) -> dict[str, Any]:
    """One run of `target` on `side`; its output echoed with a prefix; the result read back."""
    tag = f"[{side.name} r{round_no}]"
    command = target.command(out, side.package)
    if target.kind == PROFILE and not supports_json(side):
        command = command[:-2]  # an older profile: read its printed line instead
    print(f"{tag} {sys.executable} {' '.join(command)}  (cwd {side.root})", flush=True)
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=side.root,
        env=side.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        print(f"{tag} {line}", end="", flush=True)
    returncode = process.wait()
    record: dict[str, Any] = {
        "side": side.name,
        "round": round_no,
        "command": command,
        "cwd": str(side.root),
        "returncode": returncode,
        "seconds": time.monotonic() - began,
        "result": None,
        "figures": {},
    }
    if target.kind == BENCH:
        latest = out / "latest.json"
        if latest.exists():
            record["result"] = orjson.loads(latest.read_bytes())
            record["figures"] = bench_figures(record["result"])
    elif out.exists() and "--json" in command:
        record["result"] = orjson.loads(out.read_bytes())
        record["figures"] = profile_figures(record["result"])
    else:
        record["result"] = parse_profile_line("".join(lines))
        record["figures"] = profile_figures(record["result"] or {})
    if not record["figures"]:
        print(f"{tag} no figures to read back (exit {returncode})", flush=True)
    return record


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.paired",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --baseline REV [--rounds N] [--keep-worktree] [--harness own|current] -- "
        "[bench args | profile args]",
    )
    parser.add_argument("--baseline", required=True, help="the git revision to compare against")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds (default: bench 2, profile 3)",
    )
    parser.add_argument(
        "--keep-worktree",
        action="store_true",
        help="leave var/baseline/<sha12> in place (one that was already there is always kept)",
    )
    parser.add_argument(
        "--harness",
        choices=("own", "current"),
        default="own",
        help="the baseline side's harness: REV's own (default), or today's against REV's service",
    )
    parser.add_argument("--out", type=Path, default=VAR, help="results folder (%(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    own, target = split_argv(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(own)
    rounds = args.rounds or DEFAULT_ROUNDS[target.kind]
    try:
        sha = git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
    except subprocess.CalledProcessError as error:
        print(f"cannot resolve {args.baseline!r}: {error.stderr.strip()}", file=sys.stderr)
        return 2
    head = git("rev-parse", "--short=12", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    new = Side(NEW, f"{head}{'+changes' if dirty else ''}", ROOT)
    path, existed = baseline_worktree(sha)
    if args.harness == "current":
        label = f"{args.baseline} = {sha[:12]}, today's bench"
        baseline = Side(BASELINE, label, service_only(path), bench_from=ROOT)
    else:
        baseline = Side(BASELINE, f"{args.baseline} = {sha[:12]}", path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scratch = args.out.resolve() / f"paired-{stamp}"
    try:
        for side in (new, baseline):
            side.skipped = check_side(side, target)
            if side.skipped:
                print(f"SKIPPING the {side.name} side ({side.label}): {side.skipped}", flush=True)
        for round_no, order in enumerate(orders(rounds), start=1):
            for name in order:
                side = new if name == NEW else baseline
                if side.skipped:
                    continue
                suffix = "" if target.kind == BENCH else ".json"
                out = scratch / f"{name}-r{round_no}{suffix}"
                side.runs.append(run_once(side, target, out, round_no))
    finally:
        if not existed and not args.keep_worktree:
            git("worktree", "remove", "--force", str(path))
            shutil.rmtree(path.with_name(path.name + "-service"), ignore_errors=True)
    rows = build_rows([r["figures"] for r in new.runs], [r["figures"] for r in baseline.runs])
    table = markdown(rows, new.label, baseline.label)
    what = " ".join([target.module(), *target.args])
    heading = (
        f"`{what}`, {rounds} round(s) alternating, medians; new = {new.label}, "
        f"baseline = {baseline.label}"
    )
    notes = [f"{s.name} side skipped: {s.skipped}" for s in (new, baseline) if s.skipped]
    for side in (new, baseline):
        if side.runs:
            balanced = sum(1 for r in side.runs if (r["result"] or {}).get("ledger_balanced"))
            notes.append(f"{side.name}: ledger balanced in {balanced} of {len(side.runs)} runs")
    failed = [r for r in [*new.runs, *baseline.runs] if r["returncode"] != 0]
    notes += [f"{r['side']} round {r['round']} exited {r['returncode']}" for r in failed]
    text = "\n".join([heading, "", table, *([""] if notes else []), *notes]) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "started_at": stamp,
        "target": {"kind": target.kind, "args": list(target.args)},
        "rounds": rounds,
        "new": {"label": new.label, "root": str(new.root), "skipped": new.skipped},
        "baseline": {
            "rev": args.baseline,
            "sha": sha,
            "label": baseline.label,
            "root": str(baseline.root),
            "skipped": baseline.skipped,
        },
        "table": [
            {
                "figure": r.figure,
                "new_median": r.new,
                "baseline_median": r.baseline,
                "ratio": r.ratio,
                "new_runs": r.new_runs,
                "baseline_runs": r.baseline_runs,
            }
            for r in rows
        ],
        "runs": [*new.runs, *baseline.runs],
        "notes": notes,
    }
    json_path = args.out / f"paired-{stamp}.json"
    json_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    md_path = args.out / f"paired-{stamp}.md"
    md_path.write_text(text)
    print()
    print(text)
    print(f"results: {json_path}, {md_path}")
    ran_both = not new.skipped and not baseline.skipped
    return 0 if ran_both and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
