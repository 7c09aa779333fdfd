// The switchboard admin page: the actor tree, the events and the vault, read from the
// admin API of the listener that serves it. Every value from the daemon is inserted
// as text (textContent), never as HTML. The admin token is kept for this tab only
// (sessionStorage) and sent as a bearer header: no cookie.
"use strict";

const TOKEN_KEY = "switchboard.admin_token";
const REFRESH_MS = 5000;
const PAGE = 50;

const $ = (id) => document.getElementById(id);

/// An element with attributes, and children: strings become text nodes.
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function statusBadge(status) {
  const word = String(status || "unknown");
  return el("span", { class: `status status-${word.replace(/[^a-z_]/g, "")}` }, word);
}

/// "4 min ago", "in 2 h": how far a time is from now.
function age(time) {
  if (!time) return "";
  const at = Date.parse(time);
  if (Number.isNaN(at)) return "";
  const seconds = Math.round((Date.now() - at) / 1000);
  const abs = Math.abs(seconds);
  const span =
    abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.round(abs / 60)} min` :
    abs < 86400 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return seconds >= 0 ? `${span} ago` : `in ${span}`;
}

class Unauthorized extends Error {}

/// Calls the admin API with the token; a 401 shows the login again.
async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    // Asked for the first time: no error to show yet.
    showLogin(token ? `The admin token was refused (401): ${body?.error?.message || "unauthorized"}` : "");
    throw new Unauthorized("401");
  }
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* text, as /metrics is */ }
  if (!response.ok) {
    const message = body?.error?.message || text || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function notice(text, isError) {
  const node = $("notice");
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

/// Runs an action after the operator confirms it, and says how it went.
async function act(question, run, describe) {
  if (!window.confirm(question)) return;
  try {
    const outcome = await run();
    notice(describe(outcome), false);
  } catch (error) {
    if (!(error instanceof Unauthorized)) notice(`Failed: ${error.message}`, true);
  }
  refresh();
}

// ---- login -------------------------------------------------------------------

function showLogin(message) {
  $("app").hidden = true;
  $("tabs").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function open() {
  try {
    await api("/admin/actors?depth=0");
  } catch (error) {
    if (!(error instanceof Unauthorized)) showLogin(`The admin API did not answer: ${error.message}`);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("tabs").hidden = false;
  $("node").textContent = `node ${location.host}`;
  show(currentView);
  refresh();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  open();
});

$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("");
});

// ---- views --------------------------------------------------------------------

let currentView = "tree";

function show(view) {
  currentView = view;
  for (const name of ["tree", "events", "vault"]) {
    $(`view-${name}`).hidden = name !== view;
  }
  for (const button of document.querySelectorAll("#tabs [data-view]")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
  if (view === "events") loadEvents(eventsQuery());
  if (view === "vault") loadVault();
}

for (const button of document.querySelectorAll("#tabs [data-view]")) {
  button.addEventListener("click", () => show(button.dataset.view));
}

let refreshing = false;

async function refresh() {
  if ($("app").hidden || refreshing) return;
  refreshing = true;
  try {
    await loadMetrics();
    if (currentView === "tree") await loadTree();
    if (currentView === "vault") await loadVault();
  } catch (error) {
    if (!(error instanceof Unauthorized)) notice(`Refresh failed: ${error.message}`, true);
  } finally {
    refreshing = false;
  }
}

setInterval(refresh, REFRESH_MS);

// ---- metrics strip ----------------------------------------------------------

let lastSample = null;

/// Sums a metric's series in the Prometheus text.
function metric(text, name) {
  let sum = null;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    const value = Number(line.trim().split(/\s+/).pop());
    if (!Number.isNaN(value)) sum = (sum || 0) + value;
  }
  return sum;
}

async function loadMetrics() {
  const text = await api("/metrics");
  const sample = {
    at: Date.now(),
    received: metric(text, "switchboard_events_received_total") || 0,
    processed: metric(text, "switchboard_events_processed_total") || 0,
    dead: metric(text, "switchboard_events_dead_total") || 0,
    latencySum: metric(text, "switchboard_ingest_latency_seconds_sum") || 0,
    latencyCount: metric(text, "switchboard_ingest_latency_seconds_count") || 0,
  };
  const parts = [];
  if (lastSample && sample.at > lastSample.at) {
    const seconds = (sample.at - lastSample.at) / 1000;
    const rate = (key) => ((sample[key] - lastSample[key]) / seconds).toFixed(1);
    parts.push(["received", `${rate("received")}/s`], ["processed", `${rate("processed")}/s`]);
    const count = sample.latencyCount - lastSample.latencyCount;
    const latency = count > 0 ? (1000 * (sample.latencySum - lastSample.latencySum)) / count : null;
    parts.push(["ingest latency", latency === null ? "idle" : `${latency.toFixed(1)} ms`]);
  } else {
    parts.push(["received", `${sample.received} total`], ["processed", `${sample.processed} total`]);
  }
  parts.push(["dead", String(sample.dead)]);
  lastSample = sample;
  $("metrics").replaceChildren(...parts.map(([label, value]) => el("span", {}, `${label} `, el("b", {}, value))));
}

// ---- the actor tree ---------------------------------------------------------

/// Connectors opened by the operator: name → {offset, status}.
const expanded = new Map();

function facts(report) {
  const details = report.details || {};
  const items = [];
  if (report.kind) items.push(report.kind);
  items.push(`restarts ${report.restarts}${report.manual_restarts ? ` (+${report.manual_restarts} manual)` : ""}`);
  if (report.last_restart_at) items.push(`restarted ${age(report.last_restart_at)}`);
  if (report.breaker) items.push(`breaker ${report.breaker.state}`);
  if (details.limiter && details.limiter.blocked_for_ms) items.push(`limiter: waiting ${Math.ceil(details.limiter.blocked_for_ms / 1000)} s`);
  if (report.mailbox_len !== undefined && report.mailbox_len !== null) items.push(`mailbox ${report.mailbox_len}`);
  if (details.expires_at) items.push(`credentials expire ${age(details.expires_at)}`);
  if (details.organization_id) items.push(`organization ${details.organization_id}`);
  if (details.external_id) items.push(`account ${details.external_id}`);
  if (details.integration_status) items.push(`integration ${details.integration_status}`);
  if (report.stale) items.push("stale report");
  return items.join(" · ");
}

function summary(details) {
  const byStatus = details.children_by_status || {};
  const parts = Object.entries(byStatus).map(([status, count]) => `${count} ${status}`);
  return parts.length ? `children: ${parts.join(", ")}` : "";
}

function lastError(report) {
  if (!report.last_error) return null;
  const when = report.last_failure && report.last_failure.reason === report.last_error
    ? ` (${age(report.last_failure.at)})` : "";
  return el("div", { class: "last-error" }, `last error${when}: ${report.last_error}`);
}

/// The name after the kind: `connector:webhook` → `webhook`.
function bare(name) {
  const at = name.indexOf(":");
  return at < 0 ? name : name.slice(at + 1);
}

function integrationActions(report) {
  const id = bare(report.name);
  return [
    el("button", {
      type: "button",
      onclick: () => act(`Restart integration ${id}?`,
        () => api(`/admin/integrations/${encodeURIComponent(id)}/restart`, { method: "POST" }),
        (node) => `Integration ${id} restarted: ${node.status}, actor ${node.actor_id || "none"}.`),
    }, "Restart"),
    el("button", {
      type: "button",
      onclick: () => act(`Validate integration ${id} with its provider now?`,
        () => api(`/admin/integrations/${encodeURIComponent(id)}/validate`, { method: "POST" }),
        (answer) => answer.valid ? `Integration ${id} is valid.` : `Integration ${id} is not valid: ${answer.reason}`),
    }, "Validate"),
  ];
}

function row(report, actions, extra) {
  return el("div", { class: "row", "data-name": report.name },
    el("span", { class: "name" }, report.name),
    statusBadge(report.status),
    el("span", { class: "facts" }, [facts(report), extra].filter(Boolean).join(" · ")),
    el("span", { class: "actions" }, actions),
    lastError(report));
}

function childRow(report) {
  const actions = report.kind === "integration" ? integrationActions(report) : [];
  return row(report, actions);
}

async function connectorChildren(report) {
  const name = bare(report.name);
  const view = expanded.get(name);
  const query = new URLSearchParams({ depth: "1", limit: String(PAGE), offset: String(view.offset) });
  if (view.status) query.set("status", view.status);
  const node = await api(`/admin/connectors/${encodeURIComponent(name)}?${query}`);
  const total = view.status
    ? (node.details.children_by_status || {})[view.status] || 0
    : node.details.children || 0;
  const from = total === 0 ? 0 : view.offset + 1;
  const to = view.offset + node.children.length;
  const page = (offset) => () => { view.offset = Math.max(0, offset); refresh(); };
  return el("div", { class: "children" },
    node.children.map(childRow),
    el("div", { class: "pager" },
      el("button", { type: "button", disabled: view.offset === 0, onclick: page(view.offset - PAGE) }, "Previous"),
      el("span", { class: "muted" }, `${from}–${to} of ${total}${view.status ? ` ${view.status}` : ""}`),
      el("button", { type: "button", disabled: to >= total, onclick: page(view.offset + PAGE) }, "Next")));
}

async function loadTree() {
  const status = $("status-filter").value;
  const root = await api("/admin/actors?depth=1");
  const rows = [row(root, [], summary(root.details || {}))];
  for (const child of root.children) {
    const name = bare(child.name);
    const isConnector = child.kind === "connector";
    const open = expanded.has(name);
    if (open) expanded.get(name).status = status;
    const actions = [];
    if (isConnector && (child.details || {}).children) {
      actions.push(el("button", {
        type: "button",
        "aria-expanded": String(open),
        onclick: () => {
          if (expanded.has(name)) expanded.delete(name);
          else expanded.set(name, { offset: 0, status });
          refresh();
        },
      }, open ? "Hide" : "Show"));
    }
    if (isConnector) {
      actions.push(el("button", {
        type: "button",
        onclick: () => act(`Restart connector ${name} and all its integrations?`,
          () => api(`/admin/connectors/${encodeURIComponent(name)}/restart`, { method: "POST" }),
          (node) => `Connector ${name} restarted: ${node.status}.`),
      }, "Restart"));
    }
    rows.push(row(child, actions, summary(child.details || {})));
    if (open) rows.push(await connectorChildren(child));
  }
  $("tree").replaceChildren(...rows);
  window.switchboardTreeRenderedAt = performance.now();
}

$("status-filter").addEventListener("change", () => {
  for (const view of expanded.values()) view.offset = 0;
  refresh();
});

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("search").value.trim();
  const results = $("search-results");
  if (!text) { results.replaceChildren(); return; }
  try {
    const found = await api(`/admin/integrations?${new URLSearchParams({ search: text, limit: String(PAGE) })}`);
    const status = $("status-filter").value;
    const matching = found.integrations.filter((item) => !status || (item.actor && item.actor.status === status));
    results.replaceChildren(
      el("h2", {}, `${matching.length} integration${matching.length === 1 ? "" : "s"} found for “${text}”`),
      ...matching.map((item) => {
        const shown = item.actor ? childRow(item.actor) : el("div", { class: "row" },
          el("span", { class: "name" }, `integration:${item.integration.id}`),
          statusBadge(item.integration.status),
          el("span", { class: "facts" }, [
            item.integration.connector_type,
            `organization ${item.integration.organization_id}`,
            item.integration.external_id ? `account ${item.integration.external_id}` : null,
            "no actor running",
          ].filter(Boolean).join(" · ")));
        // What the connector keeps about the account (repositories, site, ...).
        const metadata = JSON.stringify(item.integration.metadata || {});
        shown.append(el("div", { class: "facts metadata" },
          `metadata ${metadata.length > 300 ? `${metadata.slice(0, 299)}…` : metadata}`));
        return shown;
      }));
  } catch (error) {
    if (!(error instanceof Unauthorized)) notice(`Search failed: ${error.message}`, true);
  }
});

$("search-clear").addEventListener("click", () => {
  $("search").value = "";
  $("search-results").replaceChildren();
});

// ---- events -------------------------------------------------------------------

let eventPages = { next: null, prev: null };

function eventsQuery() {
  const query = new URLSearchParams({ limit: String(PAGE) });
  const fields = { status: "event-status", connector: "event-connector", integration_id: "event-integration", event_type: "event-type" };
  for (const [name, id] of Object.entries(fields)) {
    const value = $(id).value.trim();
    if (value) query.set(name, value);
  }
  return query.toString();
}

async function loadEvents(query) {
  try {
    const page = await api(`/admin/events?${query}`);
    eventPages = { next: page.next, prev: page.prev };
    $("events-next").disabled = !page.next;
    $("events-prev").disabled = !page.prev;
    const rows = page.events.map((event) => el("tr", {
      "data-id": event.id,
      tabindex: "0",
      onclick: () => showEvent(event.id),
      onkeydown: (key) => { if (key.key === "Enter") showEvent(event.id); },
    },
      el("td", {}, event.received_at, el("br"), el("span", { class: "muted" }, age(event.received_at))),
      el("td", {}, event.connector_type),
      el("td", {}, event.event_type),
      el("td", {}, statusBadge(event.status)),
      el("td", {}, String(event.attempts)),
      el("td", { class: "error-text" }, event.last_error || "")));
    $("events").tBodies[0].replaceChildren(...rows);
    if (!rows.length) {
      $("events").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "No events match.")));
    }
  } catch (error) {
    if (!(error instanceof Unauthorized)) notice(`Events: ${error.message}`, true);
  }
}

async function showEvent(id) {
  try {
    const event = await api(`/admin/events/${encodeURIComponent(id)}`);
    $("event-detail").hidden = false;
    $("event-title").textContent = `${event.connector_type} · ${event.event_type}`;
    const fields = ["id", "status", "attempts", "last_error", "integration_id", "organization_id",
      "delivery_id", "received_at", "occurred_at", "processed_at", "next_attempt_at"];
    $("event-fields").replaceChildren(...fields.flatMap((name) =>
      event[name] === null || event[name] === undefined ? [] : [el("dt", {}, name), el("dd", {}, String(event[name]))]));
    // Pretty JSON when it is JSON, the text as it came otherwise.
    $("payload").textContent = event.payload_format === "json"
      ? JSON.stringify(event.payload, null, 2) : String(event.payload);
    const replay = $("replay");
    replay.hidden = event.status !== "dead";
    replay.onclick = () => act(`Replay event ${event.id}? Its integration processes it again.`,
      () => api(`/admin/events/${encodeURIComponent(event.id)}/replay`, { method: "POST" }),
      (answer) => {
        setTimeout(() => { showEvent(event.id); loadEvents(eventsQuery()); }, 1000);
        return `Event ${event.id} replayed: ${answer.event.status}.`;
      });
    $("event-detail").scrollIntoView({ block: "nearest" });
  } catch (error) {
    if (!(error instanceof Unauthorized)) notice(`Event: ${error.message}`, true);
  }
}

$("event-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  $("event-detail").hidden = true;
  loadEvents(eventsQuery());
});
$("events-next").addEventListener("click", () => eventPages.next && loadEvents(eventPages.next));
$("events-prev").addEventListener("click", () => eventPages.prev && loadEvents(eventPages.prev));

// ---- vault --------------------------------------------------------------------

async function loadVault() {
  const vault = await api("/admin/vault");
  const keys = el("table", {},
    el("thead", {}, el("tr", {}, ["key", "active", "created", "credentials", "route settings", "wrapped by"].map((h) => el("th", {}, h)))),
    el("tbody", {}, vault.keys.map((key) => el("tr", {},
      el("td", {}, key.id),
      el("td", {}, key.active ? "active" : "retired"),
      el("td", {}, `${key.created_at} (${age(key.created_at)})`),
      el("td", {}, String(key.credentials)),
      el("td", {}, String(key.route_settings ?? 0)),
      el("td", {}, key.wrapped_by || "")))));
  const rotation = vault.rotation;
  // While a rotation runs, what is still under an older key is what is left to do.
  const left = vault.keys
    .filter((key) => key.id !== vault.active_key)
    .reduce((sum, key) => sum + key.credentials + (key.route_settings || 0), 0);
  const progress = !rotation ? "No rotation since the daemon started." :
    rotation.state === "running"
      ? `Rotation to ${rotation.new_key_id} running since ${age(rotation.started_at)}: ${left} secrets still under older keys.` :
    rotation.state === "failed" ? `Rotation to ${rotation.new_key_id} failed: ${rotation.error}` :
    `Rotation to ${rotation.new_key_id} done: ${JSON.stringify(rotation.report)}`;
  $("vault").replaceChildren(
    el("p", {}, "Vault ", statusBadge(vault.state), ` · active key ${vault.active_key || "none"}`),
    el("div", { class: "table-wrap" }, keys),
    el("p", {}, progress));
  $("rotate").disabled = Boolean(rotation && rotation.state === "running");
}

$("rotate").addEventListener("click", () => act(
  "Rotate the data key? A new key encrypts from now on and every credential is re-encrypted in the background.",
  () => api("/admin/vault/rotate", { method: "POST" }),
  (answer) => `Rotation started: ${answer.new_key_id || JSON.stringify(answer)}.`));

open();
