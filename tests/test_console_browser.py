"""The operator console in a real headless browser (Debian's chromium driven by
Playwright), against a real ``serve`` and two real node processes.

What a person sees: both node rows ready with the registry's digest; a handler
failure on one node appearing in its row and in the failures view while the
other node stays ready; a repair click refused without the token, then accepted
with it, and the failure clearing as the repair heals the node; the schema
browser paging through a kind and showing a document with its revisions; a
killed node shown unreachable until its registration expires.
Screenshots land in the test's tmp dir (``SCHEMACACHE_CONSOLE_SHOTS=DIR`` copies
them to DIR as well).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service_helpers import Proc, children_of, pid_alive

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SCHEMACACHE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "console-test-token"
NODE_TOKEN = "console-test-node-token"
"""The nodes' admin token: serve sends it on with the console's repair."""
FAILING_KEY = "measure/sw_metric/service_cpm_minute"
SEEN_TIMEOUT_MS = 30_000
"""How long a change may take to show on the page (the page polls every 2 s)."""
START_TIMEOUT = 60.0
NODE_TTL = 8
"""Seconds a killed node's registration outlives it: the page shows it unreachable."""


class ConsoleCluster:
    """``serve`` with a write token and two FaultyHandler nodes guarded by their admin
    token (which serve knows); node-2 reads a fault file."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.faults = tmp_path / "faults.json"
        self.procs: list[Proc] = []
        self.url = ""

    def start(self) -> None:
        from schemacache.testing import write_faults

        write_faults(self.faults)
        registry = f"sqlite:///{self.tmp_path / 'registry.db'}"
        serve = Proc(["serve", "--registry", registry, "--listen", "127.0.0.1:0",
                      "--token", TOKEN, "--node-token", NODE_TOKEN], cwd=self.tmp_path)
        self.procs.append(serve)
        self.url = serve.wait_url()
        for name in ("node-1", "node-2"):
            env = {"SCHEMACACHE_FAULTS": str(self.faults)} if name == "node-2" else None
            self.procs.append(Proc([
                "node", "--registry", registry, "--name", name,
                "--state-dir", str(self.tmp_path / name), "--listen", "127.0.0.1:0",
                "--handler", "schemacache.testing:FaultyHandler",
                "--max-attempts", "2", "--backoff-base", "0.01", "--backoff-cap", "0.05",
                # only the console's repair click may heal the failing key in this test
                "--repair-interval", "0", "--repair-backoff-base", "600",
                "--repair-backoff-cap", "600", "--node-ttl", str(NODE_TTL),
                "--token", NODE_TOKEN,
            ], cwd=self.tmp_path, env=env))
        serve.wait_for(lambda: len(self.cluster()["nodes"]) == 2, timeout=START_TIMEOUT,
                       what="two node registrations")

    def cluster(self) -> dict[str, Any]:
        for proc in self.procs:
            if not proc.alive():
                raise AssertionError(f"{proc.args[:1]} exited:\n{proc.output}")
        try:
            return dict(httpx.get(f"{self.url}/v1/cluster", timeout=5).json())
        except httpx.HTTPError:
            return {"nodes": []}

    async def node_status(self, name: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            nodes = (await client.get(f"{self.url}/v1/cluster")).json()["nodes"]
        (entry,) = [n for n in nodes if n["name"] == name]
        return dict(entry["status"])

    def stop(self) -> None:
        pids = [p.pid for p in self.procs]
        descendants = [c for p in pids for c in children_of(p)]
        for proc in reversed(self.procs):
            proc.stop()
        left = [p for p in pids + descendants if pid_alive(p)]
        assert not left, f"processes left behind: {left}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ConsoleCluster]:
    running = ConsoleCluster(tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `sh scripts/install-chromium.sh` "
                    "(make test does) or set SCHEMACACHE_CHROMIUM")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
        try:
            tab = await browser.new_page(viewport={"width": 1280, "height": 400})
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            yield tab
            assert errors == [], f"script errors on the page: {errors}"
        finally:
            await browser.close()


@pytest.fixture
def manifest(examples_dir: Path) -> str:
    """The example schema as one multi-document manifest."""
    return "\n---\n".join(p.read_text() for p in sorted(examples_dir.glob("*.yaml")))


async def _shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, "a screenshot with something on it"
    copy_to = os.environ.get("SCHEMACACHE_CONSOLE_SHOTS")
    if copy_to:
        shutil.copy(path, Path(copy_to) / name)
    return path


async def _apply_examples(api: httpx.AsyncClient, manifest: str) -> None:
    r = await api.post("/v1/apply", content=manifest,
                       headers={"Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text


async def _touch(api: httpx.AsyncClient, key: str) -> int:
    """A new revision of ``key`` (one more field); returns it."""
    doc = (await api.get(f"/v1/schemas/{key}")).json()
    doc["spec"]["fields"].append({"name": "touched", "field_type": "INT"})
    r = await api.put(f"/v1/schemas/{key}", json=doc)
    assert r.status_code == 200, r.text
    return int(r.json()["revision"])


async def test_console_shows_nodes_failures_repair_and_schema(
        cluster: ConsoleCluster, page: Any, tmp_path: Path, manifest: str) -> None:
    from playwright.async_api import expect


    expect.set_options(timeout=SEEN_TIMEOUT_MS)
    api = httpx.AsyncClient(base_url=cluster.url, timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"})
    async with api:
        await _scenario(cluster, page, tmp_path, manifest, api)


async def _scenario(cluster: ConsoleCluster, page: Any, tmp_path: Path, manifest: str,
                    api: httpx.AsyncClient) -> None:
    from playwright.async_api import expect

    from schemacache.testing import write_faults

    await _apply_examples(api, manifest)
    await page.goto(f"{cluster.url}/?page_size=4")
    node1, node2 = (page.locator(f"#nodes tbody tr[data-node={n}]") for n in ("node-1", "node-2"))

    # both nodes converged: ready, no failure, the registry's digest
    registry_revision = (await api.get("/v1/revision")).json()["revision"]
    await expect(page.locator("#registry-revision")).to_have_text(str(registry_revision))
    for row in (node1, node2):
        await expect(row.locator(".state")).to_have_text("ready")
        await expect(row.locator(".applied")).to_have_text(str(registry_revision))
        await expect(row.locator(".lag")).to_have_text("0")
        await expect(row.locator(".digest")).to_have_class(r"digest mono same")
    await expect(page.locator("#cluster-summary")).to_contain_text(
        "2 nodes · 2 ready · 2 with the registry's digest · 0 with failures")

    # a handler failure on node-2 appears, live, without a reload
    write_faults(cluster.faults, fail={FAILING_KEY: "disk full (injected)"})
    failed_revision = await _touch(api, FAILING_KEY)
    await expect(node2.locator(".failures")).to_have_text("1")
    await expect(node2.locator(".state")).to_have_text("degraded")
    await expect(node2.locator(".digest")).to_have_class(r"digest mono differs")
    await expect(node1.locator(".state")).to_have_text("ready")
    await expect(node1.locator(".applied")).to_have_text(str(failed_revision))
    await expect(page.locator("#failure-count")).to_have_text("1")
    await _shot(page, tmp_path, "console.png")

    await page.click("nav a[data-view=failures]")
    failure = page.locator(f"#failures tbody tr[data-node=node-2][data-key='{FAILING_KEY}']")
    await expect(failure).to_have_count(1)
    await expect(failure.locator("td").nth(2)).to_have_text(str(failed_revision))
    await expect(failure.locator(".attempts")).to_have_text("2")
    await expect(failure.locator(".error-text")).to_contain_text("disk full (injected)")
    await expect(failure.locator("td").nth(5)).to_contain_text("ago")
    await expect(page.locator("#failures-empty")).to_be_hidden()
    await _shot(page, tmp_path, "console-failures.png")

    # the fault is gone, but only a repair applies the key again
    write_faults(cluster.faults)
    await page.click("nav a[data-view=cluster]")
    repairs_before = (await cluster.node_status("node-2"))["repair"]["count"]
    await node2.locator("button.repair").click()
    await expect(page.locator("#message")).to_contain_text("enter the write token")
    await expect(page.locator("#message")).to_have_class("error")
    status = await cluster.node_status("node-2")
    assert status["repair"]["count"] == repairs_before, "a refused click repairs nothing"
    assert [f["key"] for f in status["failures"]] == [FAILING_KEY]

    nodes = (await api.get("/v1/nodes")).json()["nodes"]
    (admin_url,) = [n["admin_url"] for n in nodes if n["name"] == "node-2"]
    async with httpx.AsyncClient(timeout=10) as direct:
        refused = await direct.post(f"{admin_url}/v1/repair")
    assert refused.status_code == 401, "the node itself wants its token: serve sends it"

    await page.fill("#token", TOKEN)
    await node2.locator("button.repair").click()
    await expect(page.locator("#message")).to_contain_text("node-2: repair requested")
    await expect(node2.locator(".failures")).to_have_text("0")
    await expect(node2.locator(".state")).to_have_text("ready")
    await expect(node2.locator(".digest")).to_have_class(r"digest mono same")
    await expect(node2.locator(".last-repair")).to_contain_text("ok")
    await expect(page.locator("#failure-count")).to_have_text("")
    status = await cluster.node_status("node-2")
    assert status["repair"]["count"] > repairs_before and status["repair"]["last_outcome"] == "ok"
    await page.click("nav a[data-view=failures]")
    await expect(page.locator("#failures tbody tr")).to_have_count(0)
    await expect(page.locator("#failures-empty")).to_be_visible()

    # the schema browser: kinds with counts, one page at a time, a document
    await page.click("nav a[data-view=schema]")
    await expect(page.locator("#kinds li[data-kind=measure] .count")).to_have_text("5")
    await page.click("#kinds li[data-kind=measure]")
    rows = page.locator("#resources tbody tr")
    await expect(rows).to_have_count(4)
    await expect(page.locator("#page-info")).to_contain_text("page 1 of 2 · 5 resources")
    await expect(page.locator("#prev-page")).to_be_disabled()
    first_page = await rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
    await page.click("#next-page")
    await expect(page.locator("#page-info")).to_contain_text("page 2 of 2")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#next-page")).to_be_disabled()
    second_page = await rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
    listed = (await api.get("/v1/schemas", params={"kind": "measure"})).json()["items"]
    keys = [f"measure/{i['metadata']['group']}/{i['metadata']['name']}" for i in listed]
    assert first_page + second_page == sorted(keys)
    await page.click("#prev-page")
    await expect(page.locator("#page-info")).to_contain_text("page 1 of 2")
    await page.click(f"#resources tbody tr[data-key='{FAILING_KEY}']")
    await expect(page.locator("#document-title")).to_have_text(FAILING_KEY)
    await expect(page.locator("#mod-revision")).to_have_text(str(failed_revision))
    await expect(page.locator("#document")).to_contain_text('"touched"')
    await _shot(page, tmp_path, "console-schema.png")

    # a node killed: unreachable while its registration lives, then gone
    await page.click("nav a[data-view=cluster]")
    cluster.procs[1].stop(signal.SIGKILL)
    await expect(node1.locator(".state")).to_have_text("unreachable")
    await expect(node1.locator(".error-text")).not_to_be_empty()
    await expect(node1).to_have_count(0)
    await expect(page.locator("#cluster-summary")).to_contain_text("1 node · 1 ready")
