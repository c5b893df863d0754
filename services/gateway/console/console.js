// pdo operator console: plain JavaScript against the gateway's HTTP API, no build step.
//
// Everything the API returns is put into the page as text (textContent, text nodes): a request's purpose
// or a dead letter's reason may be hostile, so no API text is ever parsed as HTML.
// The operator's key lives in sessionStorage (this tab only) and goes out as `Authorization: Bearer`.
// Every panel refreshes every few seconds; rows are kept by id and replaced only when their data changed,
// so what the operator is typing into a row survives a refresh.
"use strict";

const KEY_STORAGE = "pdo.console.operator-key";
const REFRESH_MS = 4000;
const DEAD_LETTER_LIMIT = 50;
const LIVE_GRANTS = new Set(["ACTIVE", "SUSPENDED"]);

// ------------------------------------------------------------------------------------------ DOM helpers

// An element with properties and children; strings become text nodes, never markup.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name in node && name !== "list") node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function panel(id) {
  const section = document.getElementById(id);
  return {
    section,
    body: section.querySelector("tbody"),
    status: section.querySelector(".status"),
    notice: section.querySelector(".notice"),
    count: section.querySelector(".count"),
  };
}

const KINDS = ["error", "done", "idle"];

// Show `text` in a status line; `kind` (error, done, idle) colours it.
function say(target, text, kind = "") {
  target.textContent = text;
  target.classList.remove(...KINDS);
  if (kind) target.classList.add(kind);
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function number(value) {
  return Number(value || 0).toLocaleString("en");
}

// Put `items` into `tbody` in order, one row each keyed by `keyOf`. A row whose item is unchanged stays
// as it is; a changed one is rebuilt and takes over the values typed into its inputs.
function syncRows(tbody, items, keyOf, renderRow) {
  const old = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  const rows = items.map((item) => {
    const key = keyOf(item);
    const signature = JSON.stringify(item);
    const existing = old.get(key);
    if (existing && existing.dataset.signature === signature) return existing;
    const row = renderRow(item);
    row.dataset.key = key;
    row.dataset.signature = signature;
    if (existing) carryInputs(existing, row);
    return row;
  });
  const unchanged = rows.length === tbody.rows.length && rows.every((row, i) => row === tbody.rows[i]);
  if (!unchanged) tbody.replaceChildren(...rows);
}

function carryInputs(from, to) {
  for (const input of from.querySelectorAll("input[name]")) {
    const twin = to.querySelector(`input[name="${CSS.escape(input.name)}"]`);
    if (!twin) continue;
    if (input.type === "checkbox") twin.checked = input.checked;
    else twin.value = input.value;
  }
}

function emptyRow(columns, text) {
  return el("tr", { class: "empty" }, el("td", { colSpan: columns, class: "muted" }, text));
}

// ------------------------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body) {
    const kind = body && body.error ? `${body.error}: ` : "";
    const message = (body && body.message) || `the gateway answered HTTP ${status}`;
    const hint = body && body.hint ? ` (${body.hint})` : "";
    super(`${status ? `HTTP ${status} ` : ""}${kind}${message}${hint}`);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_STORAGE) || ""}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, { message: "the gateway did not answer", hint: "is it running?" });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401) signOut(new ApiError(401, data).message);
    throw new ApiError(response.status, data);
  }
  return data;
}

// An action from a button: disable it while the call runs, then say how it went and refresh.
async function act(button, notice, call, done) {
  button.disabled = true;
  try {
    const result = await call();
    say(notice, done(result), "done");
    await refresh();
  } catch (error) {
    say(notice, error.message, "error");
  } finally {
    button.disabled = false;
  }
}

// -------------------------------------------------------------------------------------- pending requests

function requestRow(request, notice) {
  const id = request.request_id;
  const fieldBoxes = request.fields.map((field) =>
    el("label", { class: "field" }, el("input", { type: "checkbox", name: `field:${field}`, checked: true, value: field }), ` ${field}`),
  );
  const reason = el("input", { type: "text", name: "reason", placeholder: "reason", maxLength: 4000 });
  const quota = el("input", { type: "number", name: "quota", min: 1, placeholder: "daily quota" });
  const approve = el("button", { type: "button", class: "approve" }, "Approve");
  const deny = el("button", { type: "button", class: "deny danger" }, "Deny");
  approve.addEventListener("click", () => {
    const kept = fieldBoxes.map((label) => label.firstChild).filter((box) => box.checked).map((box) => box.value);
    if (kept.length === 0) return say(notice, `request ${id}: keep at least one field to approve it`, "error");
    const narrowing = {};
    if (kept.length < request.fields.length) narrowing.fields = kept;
    if (quota.value.trim()) narrowing.daily_quota_records = Number(quota.value);
    if (reason.value.trim()) narrowing.reason = reason.value.trim();
    act(approve, notice, () => api("POST", `/v1/requests/${encodeURIComponent(id)}/approve`, narrowing),
      (grant) => `approved request ${id}: grant ${grant.grant_id} is ${grant.status}`);
  });
  deny.addEventListener("click", () => {
    if (!reason.value.trim()) return say(notice, `request ${id}: say why it is denied (the tenant sees the reason)`, "error");
    act(deny, notice, () => api("POST", `/v1/requests/${encodeURIComponent(id)}/deny`, { reason: reason.value.trim() }),
      () => `denied request ${id}`);
  });
  const expected = request.expected_daily_records == null ? "" : `, ~${number(request.expected_daily_records)} records/day`;
  return el("tr", { "data-request-id": id },
    el("td", { class: "id" }, id),
    el("td", {}, request.tenant_id, el("div", { class: "muted" }, request.tenant_kind || "")),
    el("td", { class: "id" }, request.dataset_id),
    el("td", { class: "text" }, request.purpose),
    el("td", {}, fieldBoxes),
    el("td", { class: "text" }, el("code", {}, request.row_filter || "")),
    el("td", {}, `${when(request.valid_from)} – ${when(request.valid_until)}${expected}`),
    el("td", {}, el("div", { class: "actions" }, reason, quota, approve, deny)),
  );
}

async function refreshRequests() {
  const { body, notice, count } = panel("requests");
  const pending = await api("GET", "/v1/requests?status=PENDING_REVIEW");
  count.textContent = `(${pending.length})`;
  if (pending.length === 0) return body.replaceChildren(emptyRow(8, "nothing waiting for an operator"));
  syncRows(body, pending, (request) => request.request_id, (request) => requestRow(request, notice));
}

// ----------------------------------------------------------------------------------------------- grants

function grantRow(grant, notice) {
  const id = grant.grant_id;
  const path = (verb) => `/v1/grants/${encodeURIComponent(id)}/${verb}`;
  const reason = el("input", { type: "text", name: "reason", placeholder: "reason", maxLength: 4000 });
  const button = (verb, label, needsReason, extraClass = "") => {
    const node = el("button", { type: "button", class: `${verb} ${extraClass}` }, label);
    node.addEventListener("click", () => {
      const why = reason.value.trim();
      if (needsReason && !why) return say(notice, `grant ${id}: say why to ${verb} it`, "error");
      act(node, notice, () => api("POST", path(verb), why ? { reason: why } : undefined),
        (moved) => `grant ${id} is ${moved.status} now`);
    });
    return node;
  };
  const actions = [];
  if (grant.status === "ACTIVE") actions.push(reason, button("suspend", "Suspend", true));
  if (grant.status === "SUSPENDED") actions.push(reason, button("resume", "Resume", false));
  if (LIVE_GRANTS.has(grant.status)) actions.push(button("revoke", "Revoke", true, "danger"));
  const fields = grant.fields.map((field) => {
    const masking = grant.masking && grant.masking[field];
    return el("span", { class: "field" }, masking ? `${field} (${masking})` : field);
  });
  return el("tr", { "data-grant-id": id, "data-status": grant.status },
    el("td", { class: "id" }, id),
    el("td", {}, grant.tenant_id),
    el("td", { class: "id" }, grant.dataset_id),
    el("td", {}, el("span", { class: `grant-status status-${grant.status}` }, grant.status),
      grant.status_reason ? el("div", { class: "muted text" }, grant.status_reason) : null),
    el("td", {}, fields),
    el("td", { class: "number" }, grant.daily_quota_records == null ? "none" : number(grant.daily_quota_records)),
    el("td", {}, when(grant.valid_until)),
    el("td", {}, el("div", { class: "actions" }, actions)),
  );
}

async function refreshGrants() {
  const { body, notice, count } = panel("grants");
  const showAll = document.getElementById("grant-filter").value === "all";
  const grants = (await api("GET", "/v1/grants")).filter((grant) => showAll || LIVE_GRANTS.has(grant.status));
  grants.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
  count.textContent = `(${grants.length})`;
  if (grants.length === 0) return body.replaceChildren(emptyRow(8, "no grants to show"));
  syncRows(body, grants, (grant) => grant.grant_id, (grant) => grantRow(grant, notice));
}

// ------------------------------------------------------------------------------------------------ usage

// Minute windows, newest first, summed per tenant and dataset: the newest window and the whole hour.
function usageTotals(windows) {
  const newest = windows.reduce((latest, w) => (w.window_start > latest ? w.window_start : latest), "");
  const totals = new Map();
  for (const w of windows) {
    const key = `${w.tenant_id}\u0000${w.dataset_id}`;
    const total = totals.get(key) || { tenant_id: w.tenant_id, dataset_id: w.dataset_id, minute: 0, records: 0, bytes: 0 };
    total.records += Number(w.records);
    total.bytes += Number(w.bytes);
    if (w.window_start === newest) total.minute += Number(w.records);
    totals.set(key, total);
  }
  return [...totals.values()].sort((a, b) => b.records - a.records);
}

// Returns the panel's status line: a summary, or that metering is not running.
async function refreshUsage() {
  const { body } = panel("usage");
  let answer;
  try {
    answer = await api("GET", "/v1/usage?window=MINUTE");
  } catch (error) {
    if (error.status !== 404) throw error;
    body.replaceChildren(emptyRow(5, "no usage to show"));
    return ["metering not running: this gateway has no usage endpoint yet", "idle"];
  }
  const totals = usageTotals(answer.usage || []);
  const summary = [`${number(totals.reduce((sum, t) => sum + t.minute, 0))} records in the latest minute, all tenants`];
  if (totals.length === 0) body.replaceChildren(emptyRow(5, "no deliveries in the last hour"));
  else syncRows(body, totals, (t) => `${t.tenant_id} ${t.dataset_id}`, (t) => el("tr", {},
    el("td", {}, t.tenant_id),
    el("td", { class: "id" }, t.dataset_id),
    el("td", { class: "number" }, number(t.minute)),
    el("td", { class: "number" }, number(t.records)),
    el("td", { class: "number" }, number(t.bytes)),
  ));
  return summary;
}

// ----------------------------------------------------------------------------------------- dead letters

async function refreshDeadLetters() {
  const { body, count } = panel("dead-letters");
  const letters = await api("GET", `/v1/dead-letters?limit=${DEAD_LETTER_LIMIT}`);
  count.textContent = letters.length >= DEAD_LETTER_LIMIT ? `(newest ${letters.length})` : `(${letters.length})`;
  if (letters.length === 0) return body.replaceChildren(emptyRow(6, "no dead letters"));
  syncRows(body, letters, (letter) => letter.position, (letter) => el("tr", {},
    el("td", {}, when(letter.failed_at)),
    el("td", {}, letter.service),
    el("td", { class: "text" }, el("code", {}, letter.reason_code), " ", letter.reason),
    el("td", { class: "id" }, `${letter.source_topic}[${letter.source_partition}]@${letter.source_offset}`),
    el("td", { class: "number" }, `${number(letter.original_size_bytes)} B`),
    el("td", { class: "number" }, letter.replay_count),
  ));
}

// ------------------------------------------------------------------------------------ refresh and key

const PANELS = [
  ["requests", refreshRequests],
  ["grants", refreshGrants],
  ["usage", refreshUsage],
  ["dead-letters", refreshDeadLetters],
];
let timer = null;

// Refresh every panel; a panel whose call fails says why in its status line and keeps its last rows.
async function refresh() {
  clearTimeout(timer);
  if (!sessionStorage.getItem(KEY_STORAGE)) return;
  await Promise.all(PANELS.map(async ([id, load]) => {
    const { status } = panel(id);
    try {
      const [text, kind] = (await load()) || ["", ""];
      say(status, text, kind);
    } catch (error) {
      say(status, error.message, "error");
    }
  }));
  document.getElementById("refreshed").textContent = `refreshed ${new Date().toLocaleTimeString()}`;
  // An action's refresh may have overlapped this one: keep a single timer either way.
  clearTimeout(timer);
  if (sessionStorage.getItem(KEY_STORAGE)) timer = setTimeout(refresh, REFRESH_MS);
}

function showPanels(signedIn) {
  document.getElementById("sign-in").hidden = signedIn;
  document.getElementById("panels").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
}

function signOut(why) {
  clearTimeout(timer);
  sessionStorage.removeItem(KEY_STORAGE);
  showPanels(false);
  say(document.getElementById("sign-in-status"), why || "", why ? "error" : "");
}

// Check a pasted key by an operator-only call before showing the panels.
async function signIn(key) {
  const status = document.getElementById("sign-in-status");
  sessionStorage.setItem(KEY_STORAGE, key);
  say(status, "checking the key…");
  try {
    await api("GET", "/v1/dead-letters?limit=1");
  } catch (error) {
    if (error.status === 403) return signOut("that key is not an operator's: the console needs an operator key");
    if (error.status === 401) return; // api() signed out and said why
    if (error.status === 0) return signOut(error.message);
    // Any other refusal came after the key was accepted; the dead-letter panel will say what failed.
  }
  say(status, "");
  showPanels(true);
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("key");
    const key = input.value.trim();
    input.value = "";
    if (key) signIn(key);
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  document.getElementById("grant-filter").addEventListener("change", refresh);
  if (sessionStorage.getItem(KEY_STORAGE)) {
    showPanels(true);
    refresh();
  }
});
