"""(f) Writes at scale: a large manifest applied end to end, and cascade deletes.

- **apply, end to end**: a YAML manifest of one group and N measures (written
  as ``schemacache get -o yaml`` would) is applied with the real CLI,
  ``python -m schemacache apply -f FILE``, against a real ``schemacache serve``
  subprocess.  The clock runs from starting the CLI until it exits: parse and
  validate (one process per CPU), one request, the server's validation and
  the registry's one transaction — committed when the CLI exits.  On SQLite
  and on etcd (started with ``--max-txn-ops`` and ``--max-request-bytes``
  large enough for the whole manifest: one etcd transaction).
- **a larger apply**: the same with 100,000 measures on SQLite; it must complete.
- **cascade**: a group with N dependents (measures; then measures and top-N
  aggregations ranking them) deleted with ``cascade=True`` on a SQLite
  registry in this process; meanwhile a reader on the same registry reads
  one key in a loop, and the longest read is reported (readers never wait for
  the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from schemacache import Registry, Resource, open_registry

from .common import Result, Stopwatch, etcd_url
from .workload import _measure_template, group, renamed

TARGET_APPLY_SECONDS = {"sqlite": 3.0, "etcd": 6.0}
TARGET_CASCADE_SECONDS = 0.5
SERVE_TIMEOUT = 60.0
APPLY_TIMEOUT = 900.0
GROUP = "bulk"
# Room for a whole manifest in one etcd transaction (see README, "Apply limits").
ETCD_TXN_ARGS = ("--max-txn-ops=200000", "--max-request-bytes=268435456")


def manifest_text(count: int) -> str:
    """One group and ``count`` measures as multi-document YAML."""
    template = _measure_template(GROUP)
    docs = [group(GROUP).to_dict()]
    docs += [renamed(template, f"m{i}").to_dict() for i in range(count)]
    # libyaml's emitter when present: the same text, several times faster.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump_all(docs, Dumper=dumper, sort_keys=False)


@contextlib.contextmanager
def _serve(registry_url: str, workdir: Path,
           env: dict[str, str] | None = None) -> Iterator[str]:
    """A ``schemacache serve`` subprocess (with ``env``, default this process's);
    yields its URL, stops it by PID."""
    log = workdir / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "schemacache", "serve", "--registry", registry_url,
             "--listen", "127.0.0.1:0"], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while "listening on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        line = next(ln for ln in log.read_text().splitlines() if "listening on" in ln)
        yield line.split("listening on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _apply_cli(server: str, path: Path,
               env: dict[str, str] | None = None) -> tuple[float, float]:
    """Seconds ``schemacache apply -f path`` takes, start to exit (it must
    succeed), and the CPU seconds it used (its parsing processes included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "schemacache", "apply", "-f", str(path),
                           "--server", server], capture_output=True, text=True,
                          timeout=APPLY_TIMEOUT, check=False, env=env)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"apply failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


async def run_apply(backend: str, count: int, target: bool = True) -> list[Result]:
    """Apply one group and ``count`` measures end to end on ``backend``."""
    with tempfile.TemporaryDirectory(prefix="bench-f-") as tmp:
        path = Path(tmp) / "manifest.yaml"
        text = await asyncio.to_thread(manifest_text, count)
        path.write_text(text)
        seconds, cli_cpu, revision = await _timed_apply(backend, count, path)
    note = (f"{count:,} measures + 1 group, {len(text) / 1e6:.1f} MB of YAML; "
            f"`schemacache apply -f` start to exit against `schemacache serve` "
            f"(the CLI used {cli_cpu:.1f} s of CPU); registry revision {revision} after")
    return [Result("f", f"apply {count:,} measures end to end, {backend}", seconds, "s",
                   target=TARGET_APPLY_SECONDS[backend] if target else None, better="lower",
                   note=note, extra={"yaml_bytes": len(text), "cli_cpu_seconds": cli_cpu})]


async def _timed_apply(backend: str, count: int, path: Path,
                       env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Apply the manifest at ``path`` (``count`` measures) to a fresh registry
    through a fresh server: wall seconds, the CLI's CPU seconds, the revision."""
    with tempfile.TemporaryDirectory(prefix="bench-f-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            if backend == "etcd":
                url = await asyncio.to_thread(stack.enter_context, etcd_url(ETCD_TXN_ARGS))
            else:
                url = f"sqlite:///{workdir / 'registry.db'}"
            server = await asyncio.to_thread(stack.enter_context, _serve(url, workdir, env))
            seconds, cli_cpu = await asyncio.to_thread(_apply_cli, server, path, env)
            registry = open_registry(url)
            try:
                items, revision = await registry.list(f"measure/{GROUP}/")
            finally:
                await registry.close()
    if len(items) != count:
        raise RuntimeError(f"{len(items)} measures in the registry, expected {count}")
    return seconds, cli_cpu, revision


def _baseline_env(src: Path) -> dict[str, str]:
    """This environment with the package under ``src`` first on the path."""
    if not (src / "schemacache" / "__init__.py").is_file():
        raise RuntimeError(f"{src} holds no schemacache package")
    return {**os.environ, "PYTHONPATH": str(src.resolve())}


async def run_apply_against(baseline_src: Path, count: int, repeats: int) -> list[Result]:
    """The SQLite apply of ``count`` measures by this code and by the package
    under ``baseline_src`` (e.g. an older commit's ``src``, from ``git archive``),
    alternating, ``repeats`` times each: the medians and their ratio."""
    baseline_env = _baseline_env(baseline_src)
    current_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    took: dict[str, list[float]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="bench-f-") as tmp:
        path = Path(tmp) / "manifest.yaml"
        path.write_text(await asyncio.to_thread(manifest_text, count))
        for _ in range(repeats):
            for name, env in (("baseline", baseline_env), ("current", current_env)):
                seconds, _, _ = await _timed_apply("sqlite", count, path, env)
                took[name].append(seconds)
    before, after = statistics.median(took["baseline"]), statistics.median(took["current"])
    runs = f"median of {repeats}, alternating with the other"
    return [
        Result("f", f"apply {count:,} measures, sqlite, baseline {baseline_src}", before, "s",
               better="lower", note=f"{runs}: " + ", ".join(f"{t:.2f}" for t in took["baseline"])),
        Result("f", f"apply {count:,} measures, sqlite, this code", after, "s", better="lower",
               note=f"{runs}: " + ", ".join(f"{t:.2f}" for t in took["current"])),
        Result("f", "apply speed-up over the baseline, same run", before / after, "x",
               note="baseline median / this code's median"),
    ]


async def _reader(registry: Registry, key: str, stop: asyncio.Event) -> list[float]:
    """Read ``key`` in a loop until ``stop``; the duration of each read."""
    took = []
    while not stop.is_set():
        started = time.perf_counter()
        await registry.get(key)
        took.append(time.perf_counter() - started)
        await asyncio.sleep(0.001)
    return took


async def run_cascade(count: int, with_topn: bool) -> list[Result]:
    """Cascade-delete a group with ``count`` dependents on SQLite, a reader beside it."""
    with tempfile.TemporaryDirectory(prefix="bench-f-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'registry.db'}"
        writer, reader = open_registry(url), open_registry(url)
        try:
            resources = _dependents(count, with_topn)
            await writer.apply(resources)
            await writer.apply([group("other")])
            stop = asyncio.Event()
            reads = asyncio.ensure_future(_reader(reader, "group/other", stop))
            await asyncio.sleep(0.05)
            with Stopwatch() as sw:
                await writer.delete(f"group/{GROUP}", cascade=True)
            stop.set()
            took = await reads
            left, _ = await writer.list(f"measure/{GROUP}/")
        finally:
            await writer.close()
            await reader.close()
    if left:
        raise RuntimeError(f"{len(left)} measures left after the cascade")
    what = (f"{count // 2} measures + {count - count // 2} top-N" if with_topn
            else f"{count} measures")
    return [
        Result("f", f"cascade delete, {what}, sqlite", sw.seconds, "s",
               target=None if with_topn else TARGET_CASCADE_SECONDS, better="lower",
               note=f"registry.delete(group, cascade=True): {count} dependents and the group "
                    "in one transaction, one revision each"),
        Result("f", "longest read during that cascade, sqlite", max(took), "s",
               note=f"{len(took)} reads of another key by a second registry instance while "
                    "the cascade ran (WAL: readers on their own connections)"),
    ]


def _dependents(count: int, with_topn: bool) -> list[Resource]:
    template = _measure_template(GROUP)
    if not with_topn:
        return [group(GROUP), *(renamed(template, f"m{i}") for i in range(count))]
    half = count // 2
    measures = [renamed(template, f"m{i}") for i in range(half)]
    topn_template = Resource.parse({
        "kind": "topn_aggregation", "metadata": {"group": GROUP, "name": "t"},
        "spec": {"source_measure": {"group": GROUP, "name": "m0"}, "field_name": "value",
                 "group_by_tag_names": []}})
    topns = []
    for i in range(count - half):
        source = {**topn_template.spec["source_measure"], "name": f"m{i % half}"}
        spec: dict[str, Any] = {**topn_template.spec, "source_measure": source}
        topns.append(topn_template.model_copy(update={
            "spec": spec,
            "metadata": topn_template.metadata.model_copy(update={"name": f"t{i}"})}))
    return [group(GROUP), *measures, *topns]
