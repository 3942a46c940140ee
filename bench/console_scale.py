"""The operator console at scale: 100 nodes and 100,000 resources.

``.venv/bin/python bench/console_scale.py`` (``--resources``, ``--nodes``,
``--repeats``) serves the registry API (``create_registry_app``, uvicorn) on a
thread of its own with its own event loop over a memory registry holding the
resources (100,000 single SQLite writes take minutes on a loaded machine; the
console's server reads a listing per revision whatever the backend), registers
the nodes (their admin servers are one loopback HTTP server answering each
node's ``/v1/status`` with a node-sized document, every tenth node degraded
with one failure; 100 node processes holding 100,000 resources each do not fit
on the 2-core machine), then measures from the main thread what the console
asks for, and what a headless chromium (Debian's, through Playwright) takes to
show it. The baseline is the unpaged ``GET /v1/schemas?kind=measure`` a console
without paging would need, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from workload import group_name, groups_for, measures, write_all

from schemacache import Registry, open_registry
from schemacache.api.http import UvicornServer
from schemacache.api.server import create_registry_app

PAGE = 50
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _status_server(nodes: int, revision: int) -> UvicornServer:
    app = FastAPI()

    @app.get("/n/{name}/v1/status")
    async def status(name: str) -> dict[str, Any]:
        index = int(name.rsplit("-", 1)[1])
        failing = index % 10 == 0
        return {
            "node": name, "state": "degraded" if failing else "ready",
            "applied_revision": revision, "received_revision": revision,
            "registry_revision": revision,
            "cache": {"size": 100_000, "digest": "f" * 64 if failing else "0" * 64},
            "failures": [{"key": f"measure/bg0/m{index}", "revision": revision, "attempts": 5,
                          "first_failed": "2026-12-01T08:00:00Z",
                          "last_failed": "2026-12-01T08:00:01Z",
                          "last_error": "TemporaryError: injected"}] if failing else [],
            "blocked": [],
            "repair": {"running": False, "pending": False, "count": 3, "last_outcome": "ok",
                       "last_finished": "2026-12-01T08:00:02Z"},
        }

    return UvicornServer(app)


async def _timed(call: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, Any]:
    """Median milliseconds of ``repeats`` calls, and the last call's result."""
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


class _ServerThread:
    """The registry API over a filled memory registry, on its own thread and loop."""

    def __init__(self, resources: int, nodes: int):
        self.resources = resources
        self.nodes = nodes
        self.url = ""
        self.registry: Registry | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> str:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.url

    def call(self, coro: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.registry = registry = open_registry("memory://")
            start = time.perf_counter()
            await write_all(registry, groups_for(self.resources))
            revision = await write_all(registry, measures(self.resources))
            print(f"wrote {self.resources:,} measures in {time.perf_counter() - start:.1f} s",
                  flush=True)
            status = _status_server(self.nodes, revision)
            admin = await status.start()
            for i in range(1, self.nodes + 1):
                await registry.register_node(f"node-{i:03d}", f"{admin}/n/node-{i:03d}",
                                             ttl=3600)
            server = UvicornServer(create_registry_app(registry))
            self.url = await server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await server.stop()
        await status.stop()
        await registry.close()


async def _http_figures(server: _ServerThread, repeats: int) -> list[tuple[str, str]]:
    url = server.url
    rows: list[tuple[str, str]] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def page(after: str | None = None) -> httpx.Response:
            params: dict[str, Any] = {"kind": "measure", "limit": PAGE}
            if after:
                params["continue"] = after
            r = await client.get("/v1/schemas", params=params)
            r.raise_for_status()
            return r

        cold, _ = await _timed(page, 1)
        rows.append(("first page of 50 after a write (lists the registry once)", f"{cold:.0f} ms"))
        warm, first = await _timed(page, repeats)
        rows.append(("page of 50, warm", f"{warm:.1f} ms · {len(first.content):,} bytes"))
        after = first.json()["continue"]
        deep, _ = await _timed(lambda: page(after), repeats)
        rows.append(("next page (continue), warm", f"{deep:.1f} ms"))
        kinds, _ = await _timed(lambda: client.get("/v1/kinds"), repeats)
        rows.append(("GET /v1/kinds, warm", f"{kinds:.1f} ms"))
        cluster, answer = await _timed(lambda: client.get("/v1/cluster"), repeats)
        count = len(answer.json()["nodes"])
        rows.append((f"GET /v1/cluster, {count} nodes", f"{cluster:.0f} ms · "
                     f"{len(answer.content):,} bytes"))
        full, whole = await _timed(
            lambda: client.get("/v1/schemas", params={"kind": "measure"}), max(1, repeats // 5))
        rows.append(("baseline: unpaged GET /v1/schemas?kind=measure",
                     f"{full:.0f} ms · {len(whole.content):,} bytes"))
        rows.append(("paged vs unpaged (time, bytes)",
                     f"{warm / full:.4f} x · {len(first.content) / len(whole.content):.5f} x"))
        assert server.registry is not None
        group = await asyncio.to_thread(server.call,
                                        server.registry.get(f"group/{group_name(0)}"))
        await asyncio.to_thread(server.call, server.registry.put(group))
        cold2, _ = await _timed(page, 1)
        rows.append(("first page after one more write", f"{cold2:.0f} ms"))
    return rows


async def _browser_figures(url: str, nodes: int) -> list[tuple[str, str]]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=60_000)
    rows: list[tuple[str, str]] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
        try:
            tab = await browser.new_page(viewport={"width": 1280, "height": 800})
            start = time.perf_counter()
            await tab.goto(f"{url}/")
            await expect(tab.locator("#nodes tbody tr")).to_have_count(nodes)
            rows.append((f"browser: open → {nodes} node rows shown",
                         f"{(time.perf_counter() - start) * 1000:.0f} ms"))
            render = await tab.evaluate(
                "() => { const t = performance.now(); renderCluster();"
                " return performance.now() - t; }")
            rows.append(("browser: one re-render of the node table", f"{render:.1f} ms"))
            await tab.click("nav a[data-view=schema]")
            start = time.perf_counter()
            await tab.click("#kinds li[data-kind=measure]")
            await expect(tab.locator("#page-info")).to_contain_text("page 1 of")
            rows.append(("browser: click kind → first page shown",
                         f"{(time.perf_counter() - start) * 1000:.0f} ms"))
            start = time.perf_counter()
            await tab.click("#next-page")
            await expect(tab.locator("#page-info")).to_contain_text("page 2 of")
            rows.append(("browser: Next → page 2 shown",
                         f"{(time.perf_counter() - start) * 1000:.0f} ms"))
            elements = await tab.evaluate("() => document.getElementsByTagName('*').length")
            heap = await tab.evaluate(
                "() => performance.memory ? performance.memory.usedJSHeapSize : 0")
            rows.append(("browser: DOM elements · JS heap",
                         f"{elements:,} · {heap / 1e6:.1f} MB"))
        finally:
            await browser.close()
    return rows


async def main(resources: int, nodes: int, repeats: int) -> None:
    server = _ServerThread(resources, nodes)
    url = server.start()
    try:
        rows = await _http_figures(server, repeats)
        rows += await _browser_figures(url, nodes)
    finally:
        server.stop()
    width = max(len(name) for name, _ in rows)
    print(f"\n{resources:,} resources, {nodes} nodes, median of {repeats}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.resources, args.nodes, args.repeats))
