// The schemacache operator console: plain script, no build step, no outside requests.
// Reads the registry API of the server that serves it; every value is written
// with textContent, never as HTML.
"use strict";

const POLL_INTERVAL_MS = 2000;   // cluster view refresh
const DEFAULT_PAGE_SIZE = 50;    // schema browser rows per page (?page_size= overrides)
const TOKEN_KEY = "schemacache.token";

const params = new URLSearchParams(location.search);
const pageSize = Math.min(1000, Math.max(1, parseInt(params.get("page_size"), 10) || DEFAULT_PAGE_SIZE));

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name === "title") node.title = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function short(digest) { return digest ? String(digest).slice(0, 12) : "–"; }

function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h ago`;
  return `${(seconds / 86400).toFixed(1)} d ago`;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function say(text, isError) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", Boolean(isError));
}

// ------------------------------------------------------------------ views

function show(view) {
  const known = ["cluster", "failures", "schema"];
  if (!known.includes(view)) view = "cluster";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.view !== view;
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
  if (view === "schema") loadKinds();
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));

// ------------------------------------------------------------------ cluster

let cluster = null;

function summarize(entry, registryDigest) {
  const st = entry.status;
  if (!st) {
    return { name: entry.name, state: "unreachable", error: entry.error || "no answer",
             failures: [], blocked: [], problem: true };
  }
  const applied = Number(st.applied_revision || 0);
  const registry = Number(st.registry_revision || 0);
  const lag = st.lag !== undefined && st.lag !== null ? Number(st.lag) : Math.max(0, registry - applied);
  const digest = (st.cache || {}).digest || "";
  const failures = st.failures || [];
  const blocked = st.blocked || [];
  const repair = st.repair || {};
  const same = digest === registryDigest;
  return {
    name: entry.name, state: st.state || "?", applied, registry, lag, failures, blocked,
    repair, digest, same,
    problem: st.state !== "ready" || failures.length > 0 || blocked.length > 0 || !same,
  };
}

function nodeRow(node) {
  const row = el("tr", { "data-node": node.name, class: node.problem ? "problem" : "" });
  const cell = (value, cls) => el("td", { class: cls }, value);
  row.append(cell(node.name, "node-name"),
             cell(node.state, `state state-${node.state}`));
  if (node.state === "unreachable") {
    const error = el("td", { colspan: 7, class: "error-text" }, node.error);
    row.append(error, el("td"));
    return row;
  }
  const repair = node.repair;
  let lastRepair = "never";
  if (repair.running) lastRepair = "running";
  else if (repair.last_finished) lastRepair = `${repair.last_outcome || ""} ${age(repair.last_finished)}`.trim();
  const button = el("button", { type: "button", class: "repair", "data-node": node.name }, "Repair");
  button.addEventListener("click", () => requestRepair(node.name, button));
  row.append(
    cell(node.applied, "num applied"),
    cell(node.registry, "num node-registry"),
    cell(node.lag, `num lag${node.lag ? " nonzero" : ""}`),
    cell(node.failures.length, `num failures${node.failures.length ? " nonzero" : ""}`),
    cell(node.blocked.length, `num blocked${node.blocked.length ? " nonzero" : ""}`),
    el("td", { class: "last-repair", title: `${repair.count || 0} repairs` }, lastRepair),
    el("td", { class: `digest mono ${node.same ? "same" : "differs"}`,
               title: node.same ? "equals the registry's digest" : "differs from the registry's digest" },
       `${node.same ? "✓" : "✗"} ${short(node.digest)}`),
    el("td", {}, button),
  );
  return row;
}

function renderCluster() {
  if (!cluster) return;
  $("registry-revision").textContent = cluster.revision;
  $("registry-digest").textContent = short(cluster.digest);
  $("registry-digest").title = cluster.digest;
  const nodes = cluster.nodes.map((entry) => summarize(entry, cluster.digest));
  const ready = nodes.filter((n) => n.state === "ready").length;
  const inSync = nodes.filter((n) => n.same).length;
  const failing = nodes.filter((n) => n.failures.length).length;
  $("cluster-summary").textContent =
    `${nodes.length} node${nodes.length === 1 ? "" : "s"} · ${ready} ready · ${inSync} with the registry's digest · ${failing} with failures`;

  const filter = $("node-filter").value.trim().toLowerCase();
  const problemsOnly = $("problems-only").checked;
  const shown = nodes.filter((n) => (!filter || n.name.toLowerCase().includes(filter))
                                    && (!problemsOnly || n.problem));
  $("nodes").tBodies[0].replaceChildren(...shown.map(nodeRow));
  $("nodes-empty").hidden = nodes.length > 0;

  const failureRows = [];
  const blockedRows = [];
  for (const node of nodes) {
    for (const f of node.failures) {
      failureRows.push(el("tr", { "data-node": node.name, "data-key": f.key },
        el("td", {}, node.name), el("td", { class: "mono key" }, f.key),
        el("td", { class: "num" }, f.revision), el("td", { class: "num attempts" }, f.attempts),
        el("td", { class: "error-text" }, f.last_error),
        el("td", { title: f.first_failed }, age(f.first_failed)),
        el("td", { title: f.last_failed }, age(f.last_failed))));
    }
    for (const b of node.blocked) {
      blockedRows.push(el("tr", { "data-node": node.name, "data-key": b.key },
        el("td", {}, node.name), el("td", { class: "mono" }, b.key),
        el("td", { class: "mono" }, (b.blocked_by || []).join(", "))));
    }
  }
  $("failures").tBodies[0].replaceChildren(...failureRows);
  $("failures-empty").hidden = failureRows.length > 0;
  $("blocked").tBodies[0].replaceChildren(...blockedRows);
  $("blocked-empty").hidden = blockedRows.length > 0;
  $("failure-count").textContent = failureRows.length ? failureRows.length : "";
}

async function poll() {
  try {
    cluster = await api("/v1/cluster");
    $("banner").hidden = true;
    $("updated").textContent = new Date().toLocaleTimeString();
    renderCluster();
    if (!$("view-schema").hidden && browser.revision !== cluster.revision) loadKinds();
  } catch (error) {
    $("banner").textContent = `Cannot read the cluster: ${error.message}`;
    $("banner").hidden = false;
  } finally {
    setTimeout(poll, POLL_INTERVAL_MS);
  }
}

async function requestRepair(name, button) {
  const token = $("token").value.trim();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  button.disabled = true;
  try {
    const result = await api(`/v1/nodes/${encodeURIComponent(name)}/repair`, { method: "POST", headers });
    say(`${name}: repair ${result.coalesced ? "requested (joins the running one)" : "requested"}`);
  } catch (error) {
    const hint = error.status === 401 ? " — enter the write token above"
               : error.status === 403 ? " — the write token is wrong" : "";
    say(`${name}: repair refused: ${error.message}${hint}`, true);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------ schema browser

const browser = { revision: null, kind: null, group: "", pages: [null], page: 0, next: null, total: 0 };

async function loadKinds() {
  try {
    const result = await api("/v1/kinds");
    browser.revision = result.revision;
    $("kinds-total").textContent = `${result.count} at revision ${result.revision}`;
    $("kinds").replaceChildren(...result.kinds.map((k) => {
      const item = el("li", { "data-kind": k.kind, class: k.kind === browser.kind ? "selected" : "" },
                      el("span", {}, k.kind), el("span", { class: "muted count" }, k.count));
      item.addEventListener("click", () => selectKind(k.kind));
      return item;
    }));
  } catch (error) {
    say(`Cannot list kinds: ${error.message}`, true);
  }
}

function selectKind(kind) {
  browser.kind = kind;
  browser.pages = [null];
  browser.page = 0;
  for (const item of $("kinds").children) item.classList.toggle("selected", item.dataset.kind === kind);
  loadPage();
}

async function loadPage() {
  const query = new URLSearchParams({ kind: browser.kind, limit: pageSize });
  if (browser.group) query.set("group", browser.group);
  const after = browser.pages[browser.page];
  if (after) query.set("continue", after);
  try {
    const result = await api(`/v1/schemas?${query}`);
    browser.next = result.continue || null;
    browser.total = result.total;
    const pages = Math.max(1, Math.ceil(result.total / pageSize));
    $("resources-title").textContent = `${browser.kind}${browser.group ? ` in ${browser.group}` : ""}`;
    $("page-info").textContent =
      `page ${browser.page + 1} of ${pages} · ${result.total} resources · revision ${result.revision}`;
    $("prev-page").disabled = browser.page === 0;
    $("next-page").disabled = !browser.next;
    $("resources").tBodies[0].replaceChildren(...result.items.map((r) => {
      const key = resourceKey(r);
      const row = el("tr", { "data-key": key }, el("td", { class: "mono" }, key),
                     el("td", { class: "num" }, r.metadata.mod_revision));
      row.addEventListener("click", () => showDocument(key, row));
      return row;
    }));
  } catch (error) {
    say(`Cannot list ${browser.kind}: ${error.message}`, true);
  }
}

function resourceKey(r) {
  return r.kind === "group" ? `group/${r.metadata.name}` : `${r.kind}/${r.metadata.group}/${r.metadata.name}`;
}

async function showDocument(key, row) {
  for (const other of $("resources").tBodies[0].rows) other.classList.toggle("selected", other === row);
  try {
    const doc = await api(`/v1/schemas/${key.split("/").map(encodeURIComponent).join("/")}`);
    const meta = doc.metadata || {};
    $("document-title").textContent = key;
    $("document-meta").replaceChildren(
      el("dt", {}, "create revision"), el("dd", { id: "create-revision" }, meta.create_revision),
      el("dt", {}, "mod revision"), el("dd", { id: "mod-revision" }, meta.mod_revision),
      el("dt", {}, "updated"), el("dd", {}, meta.updated_at || "–"));
    $("document").textContent = JSON.stringify(doc, null, 2);
  } catch (error) {
    say(`Cannot read ${key}: ${error.message}`, true);
  }
}

// ------------------------------------------------------------------ start

function start() {
  const token = $("token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value));
  $("node-filter").addEventListener("input", renderCluster);
  $("problems-only").addEventListener("change", renderCluster);
  $("prev-page").addEventListener("click", () => { browser.page -= 1; loadPage(); });
  $("next-page").addEventListener("click", () => {
    browser.pages[browser.page + 1] = browser.next;
    browser.page += 1;
    loadPage();
  });
  let groupTimer = null;
  $("group-filter").addEventListener("input", () => {
    clearTimeout(groupTimer);
    groupTimer = setTimeout(() => {
      browser.group = $("group-filter").value.trim();
      if (browser.kind) selectKind(browser.kind);
    }, 300);
  });
  show(location.hash.slice(1));
  poll();
}

start();
