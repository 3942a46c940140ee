"""Run the schemacache benchmarks and print one table (``make bench``).

Sections (pick with ``--sections``, default all):

a. events/s applied by one node (no-op handler, durable state), memory and SQLite;
b. propagation commit -> applied, p50/p99, over node processes, SQLite and etcd;
c. initial sync and no-op repair of many resources;
d. restart to ready with those resources applied, without a full listing;
e. a poisoned key against the retry-forever baseline;
f. writes at scale: a large manifest applied end to end, cascade deletes.

Writes every figure to ``bench/results.json`` (``--output``) and the nodes'
log lines to ``bench/run.log`` (``--log``).  ``--quick`` uses small sizes (a
smoke test; its figures mean little).  Exit status: 0 when every section ran
(whether or not it met its target), 1 when one failed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (``python bench/run.py``): make ``bench`` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sec_apply, sec_poisoned, sec_propagation, sec_repair, sec_throughput
from bench.common import Result

HERE = Path(__file__).resolve().parent
SECTIONS = "abcdef"


@dataclass
class Sizes:
    """How much each section does (see ``--help`` for each field's flag)."""

    events: int
    live_events: int
    nodes: int
    rate: float
    seconds: float
    resources: int
    poison_keys: int
    window: float
    repeats: int
    apply_resources: int
    large_apply: int
    dependents: int


FULL = Sizes(events=50_000, live_events=10_000, nodes=5, rate=200.0, seconds=10.0,
             resources=100_000, poison_keys=20_000, window=60.0, repeats=3,
             apply_resources=10_000, large_apply=100_000, dependents=1_000)
QUICK = Sizes(events=2_000, live_events=500, nodes=5, rate=50.0, seconds=1.0,
              resources=2_000, poison_keys=1_000, window=2.0, repeats=1,
              apply_resources=500, large_apply=2_000, dependents=100)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--sections", default=SECTIONS,
                   help="sections to run, e.g. 'ae' or 'a,e' (default: all)")
    p.add_argument("--backends-a", default="memory,sqlite",
                   help="registries of section a (default: memory,sqlite)")
    p.add_argument("--backends-b", default="sqlite,etcd",
                   help="registries of section b (default: sqlite,etcd)")
    p.add_argument("--backends-cd", default="memory,sqlite",
                   help="registries of sections c and d: memory, sqlite or etcd "
                        "(default: memory,sqlite)")
    p.add_argument("--backends-f", default="sqlite,etcd",
                   help="registries of section f's end-to-end apply (default: sqlite,etcd)")
    for name, help_text in (
            ("events", "a: changes written while the node is stopped"),
            ("live-events", "a: changes written while it runs (0 = skip)"),
            ("nodes", "b: node processes"),
            ("rate", "b: writes per second"),
            ("seconds", "b: seconds of writing"),
            ("resources", "c, d: resources in the registry"),
            ("poison-keys", "e: other keys written per run"),
            ("window", "e: seconds over which poisoned-key calls are counted"),
            ("repeats", "a, e: timed runs per figure (median reported)"),
            ("apply-resources", "f: measures applied end to end"),
            ("large-apply", "f: measures of the larger apply, SQLite (0 = skip)"),
            ("dependents", "f: dependents of the cascade-deleted group")):
        field = name.replace("-", "_")
        kind = float if field in ("rate", "seconds", "window") else int
        p.add_argument(f"--{name}", dest=field, type=kind, default=None,
                       help=f"{help_text} (default {getattr(FULL, field)}, "
                            f"quick {getattr(QUICK, field)})")
    p.add_argument("--apply-baseline", type=Path, default=None, metavar="SRC",
                   help="f: also time the SQLite apply with the schemacache package under SRC "
                        "(e.g. `git archive REV src | tar -x -C DIR`, then DIR/src), alternating "
                        "with this code --repeats times: medians and ratio")
    p.add_argument("--handler-work-us", type=float,
                   default=sec_poisoned.HANDLER_WORK_SECONDS * 1e6,
                   help="e: CPU microseconds per handler call (default %(default).0f)")
    p.add_argument("--output", type=Path, default=HERE / "results.json",
                   help="JSON results file (default bench/results.json)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="write a cProfile file per step to DIR (event-loop thread only; "
                        "read with python -m pstats)")
    p.add_argument("--log", type=Path, default=HERE / "run.log",
                   help="log file of the nodes run in-process (default bench/run.log)")
    return p.parse_args(argv)


def _sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    values = {f: getattr(args, f) if getattr(args, f) is not None else getattr(base, f)
              for f in Sizes.__dataclass_fields__}
    return Sizes(**values)


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


_Step = tuple[str, str, Callable[[], Awaitable[list[Result]]]]


def _plan(args: argparse.Namespace, sizes: Sizes) -> list[_Step]:
    """(section, title, thunk) per step, in run order."""
    wanted = {c for c in args.sections.lower() if c in SECTIONS}
    steps: list[_Step] = []
    if "a" in wanted:
        for backend in _list(args.backends_a):
            steps.append(("a", f"throughput, {backend}",
                          partial(sec_throughput.run, backend, sizes.events, sizes.live_events,
                                  sizes.repeats)))
    if "b" in wanted:
        for backend in _list(args.backends_b):
            steps.append(("b", f"propagation, {backend}",
                          partial(sec_propagation.run, backend, sizes.nodes, sizes.rate,
                                  sizes.seconds)))
    cd = "".join(c for c in "cd" if c in wanted)
    if cd:
        for backend in _list(args.backends_cd):
            steps.append((cd, f"repair/restart, {backend}",
                          partial(sec_repair.run, backend, sizes.resources, cd)))
    if "e" in wanted:
        sec_poisoned.HANDLER_WORK_SECONDS = args.handler_work_us / 1e6
        steps.append(("e", "poisoned key vs baseline",
                      partial(sec_poisoned.run, sizes.poison_keys, sizes.window, sizes.repeats)))
    if "f" in wanted:
        for backend in _list(args.backends_f):
            steps.append(("f", f"apply end to end, {backend}",
                          partial(sec_apply.run_apply, backend, sizes.apply_resources)))
        if args.apply_baseline is not None:
            steps.append(("f", "apply against a baseline, sqlite",
                          partial(sec_apply.run_apply_against, args.apply_baseline,
                                  sizes.apply_resources, sizes.repeats)))
        if sizes.large_apply:
            steps.append(("f", "larger apply, sqlite",
                          partial(sec_apply.run_apply, "sqlite", sizes.large_apply, False)))
        for with_topn in (False, True):
            steps.append(("f", "cascade delete, sqlite",
                          partial(sec_apply.run_cascade, sizes.dependents, with_topn)))
    return steps


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}"


def _target(r: Result) -> str:
    if r.target is None:
        return ""
    return ("≥ " if r.better == "higher" else "≤ ") + _fmt(r.target, r.unit)


def render(results: list[Result]) -> str:
    """The results as a fixed-width table, then one numbered note per row that has one."""
    rows = [("", "measurement", "value", "target", "verdict")]
    notes: list[str] = []
    for r in results:
        name = r.name
        if r.note:
            notes.append(r.note)
            name = f"{name} [{len(notes)}]"
        margin = r.margin
        verdict = r.verdict
        if margin is not None and verdict in ("PASS", "MISS"):
            verdict = f"{verdict} ({margin:+.0%})"
        rows.append((r.section, name, _fmt(r.value, r.unit), _target(r), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if i != 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                     .rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.extend(f"[{i}] {note}" for i, note in enumerate(notes, 1))
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> tuple[list[Result], bool]:
    sizes = _sizes(args)
    results: list[Result] = []
    ok = True
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    for n, (section, title, thunk) in enumerate(_plan(args, sizes), 1):
        print(f"-- {section}: {title} ...", flush=True)
        started = time.perf_counter()
        profiler = cProfile.Profile() if args.profile is not None else None
        try:
            if profiler is not None:
                profiler.enable()
            step = await thunk()
        except Exception as exc:
            ok = False
            logging.getLogger("bench").error("section %s (%s) failed:\n%s", section, title,
                                             traceback.format_exc())
            step = [Result(section[0], title, None, "", note=f"failed: "
                                                             f"{type(exc).__name__}: {exc}")]
        finally:
            if profiler is not None:
                profiler.disable()
                name = "".join(c if c.isalnum() else "-" for c in title)
                profiler.dump_stats(args.profile / f"{n:02d}-{section}-{name}.prof")
        print(f"   done in {time.perf_counter() - started:.1f}s", flush=True)
        results.extend(step)
    return results, ok


def _configure_logging(path: Path) -> None:
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def _loads(loads: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in loads)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _configure_logging(args.log)
    sizes = _sizes(args)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    results, ok = asyncio.run(_run(args))
    load_after = os.getloadavg()
    print()
    print(render(results))
    # Other processes share the CPUs: the load average says how much.
    print(f"\nload average (1/5/15 min) before: {_loads(load_before)}, after: "
          f"{_loads(load_after)}; {os.cpu_count()} CPUs")
    report: dict[str, Any] = {
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sizes": sizes.__dict__,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "load_before": load_before,
                    "load_after": load_after},
        "results": [r.to_dict() for r in results],
    }
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults written to {args.output}; node logs in {args.log}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
