// pdo console: plain JavaScript against the gateway's HTTP API, no build step. Charts are drawn by uPlot
// (vendor/, pinned). The key's kind (GET /v1/me) picks the pages: operator, tenant, provider or auditor.
//
// Everything the API returns is put into the page as text (textContent, text nodes): a request's purpose
// or a dead letter's reason may be hostile, so no API text is ever parsed as HTML.
// The operator's key lives in sessionStorage (this tab only) and goes out as `Authorization: Bearer`.
// Every panel refreshes every few seconds; rows are kept by id and replaced only when their data changed,
// so what the operator is typing into a row survives a refresh.
"use strict";

const KEY_STORAGE = "pdo.console.key";
const REFRESH_MS = 4000;
const DEAD_LETTER_LIMIT = 50;
const LIVE_GRANTS = new Set(["ACTIVE", "SUSPENDED"]);
const PAGES = {
  operator: [["overview", "Overview"], ["requests", "Requests and grants"], ["catalog", "Catalog"], ["audit", "Audit"]],
  tenant: [["mine", "My data"], ["catalog", "Catalog"]],
  provider: [["catalog", "Catalog"]],
  auditor: [["audit", "Audit"]],
};
let me = null; // {principal_id, kind} of the key in use

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

// ------------------------------------------------------------------------------------ kinds and lineage

function windowInWords(seconds) {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

// What a grant or request hands the tenant: ROWS, or AGGREGATE with its window, aggregates and epsilon.
// No k (the smallest group released): it is not a term of the grant but the larger of the dataset's and the
// operator's minimum, which the aggregation worker applies and the API does not show.
function kindCell(item) {
  const kind = item.kind || "ROWS";
  const spec = kind === "AGGREGATE" ? item.aggregate : null;
  const details = spec ? [
    `window ${windowInWords(spec.window_seconds)}`,
    `${spec.functions.join(", ")}${spec.group_by.length ? ` by ${spec.group_by.join(", ")}` : ""}`,
    spec.epsilon == null ? null : `ε ${spec.epsilon} per window`,
  ] : [];
  return el("td", { class: "kind" }, el("span", { class: `kind-${kind}` }, kind),
    details.filter((line) => line !== null).map((line) => el("div", { class: "muted" }, line)));
}

// A derived data product is marked and names its sources (its lineage, from the catalog).
function lineageOf(dataset) {
  const sources = dataset.derived_from || [];
  if (sources.length === 0) return [];
  return [el("span", { class: "mark-PRODUCT" }, "PRODUCT"), el("div", { class: "muted lineage" }, `derived from: ${sources.join(", ")}`)];
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
    kindCell(request),
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
  if (pending.length === 0) return body.replaceChildren(emptyRow(9, "nothing waiting for an operator"));
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
    kindCell(grant),
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
  const grants = (await grantsNow()).filter((grant) => showAll || LIVE_GRANTS.has(grant.status));
  grants.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
  count.textContent = `(${grants.length})`;
  if (grants.length === 0) return body.replaceChildren(emptyRow(9, "no grants to show"));
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

// ----------------------------------------------------------------------------------------------- charts

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const charts = new Map(); // container id -> {plot, labels}

// Draw a /v1/series answer into `container`: the same lines are updated in place, new lines redraw.
// The container says how many points it drew (data-points: values above zero), so tests and people can tell
// an empty chart from a flat one.
function drawSeries(container, answer) {
  const labels = answer.series.map((line) => line.label).join("\u0000");
  const data = [answer.times, ...answer.series.map((line) => line.values)];
  const shown = charts.get(container.id);
  if (shown && shown.labels === labels) shown.plot.setData(data);
  else {
    if (shown) shown.plot.destroy();
    container.replaceChildren();
    const options = {
      width: Math.max(320, container.clientWidth || 480),
      height: 200,
      scales: { x: { time: true } },
      axes: [{}, { label: answer.unit, size: 60 }],
      series: [{}, ...answer.series.map((line, i) => ({
        label: line.label, stroke: COLOURS[i % COLOURS.length], width: 2, points: { show: false },
      }))],
    };
    charts.set(container.id, { plot: new uPlot(options, data, container), labels });
  }
  const points = answer.series.reduce((sum, line) => sum + line.values.filter((v) => v > 0).length, 0);
  container.dataset.points = String(points);
  container.dataset.lines = String(answer.series.length);
  return points;
}

async function refreshChart(container) {
  const status = container.parentElement.querySelector(".status");
  try {
    const answer = await api("GET", container.dataset.series);
    const points = drawSeries(container, answer);
    let text = answer.series.length === 0 || points === 0 ? "nothing in this window yet" : "";
    if (answer.sources && answer.sources.length === 0) text = "no stream worker's metrics on this host to read";
    say(status, text, text ? "idle" : "");
  } catch (error) {
    say(status, error.message, "error");
  }
}

async function refreshCharts(sectionId) {
  await Promise.all([...document.querySelectorAll(`#${sectionId} .chart[data-series]`)].map(refreshChart));
}

async function refreshRevenue() {
  const section = document.getElementById("revenue");
  const answer = await api("GET", "/v1/series/revenue");
  section.querySelector(".count").textContent = `(${answer.period}, provisional until closed)`;
  section.querySelector(".headline").textContent = answer.totals.length === 0
    ? "no revenue yet this month"
    : answer.totals.map((total) => `${total.revenue} ${total.currency}`).join(" + ");
  const body = section.querySelector("tbody");
  if (answer.datasets.length === 0) return body.replaceChildren(emptyRow(4, "no priced deliveries this month"));
  syncRows(body, answer.datasets, (row) => row.dataset_id, (row) => el("tr", {},
    el("td", { class: "id" }, row.dataset_id),
    el("td", { class: "number" }, number(row.tenants)),
    el("td", { class: "number" }, number(row.records)),
    el("td", { class: "number" }, `${row.revenue} ${row.currency || ""}`),
  ));
}

// ------------------------------------------------------------------------------------------------ tenant

function fieldsText(grant) {
  return grant.fields.map((field) => {
    const masking = grant.masking && grant.masking[field];
    return el("span", { class: "field" }, masking ? `${field} (${masking})` : field);
  });
}

function statusCell(status, reason) {
  return el("td", {}, el("span", { class: `grant-status status-${status}` }, status),
    reason ? el("div", { class: "muted text" }, reason) : null);
}

async function refreshMyGrants() {
  const { body, count } = panel("my-grants");
  const grants = await grantsNow();
  grants.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
  count.textContent = `(${grants.length})`;
  if (grants.length === 0) return body.replaceChildren(emptyRow(7, "no grants yet: ask for data below"));
  syncRows(body, grants, (grant) => grant.grant_id, myGrantRow);
}

function myGrantRow(grant) {
  return el("tr", { "data-grant-id": grant.grant_id, "data-status": grant.status },
    el("td", { class: "id" }, grant.grant_id),
    el("td", { class: "id" }, grant.dataset_id),
    kindCell(grant),
    statusCell(grant.status, grant.status_reason),
    el("td", {}, fieldsText(grant)),
    el("td", { class: "number" }, grant.daily_quota_records == null ? "none" : number(grant.daily_quota_records)),
    el("td", {}, `${when(grant.valid_from)} – ${when(grant.valid_until)}`),
  );
}

// The policy's answer to a request, in words.
function answerInWords(request) {
  const why = request.decision_reason ? `: ${request.decision_reason.replace(/[.\s]+$/, "")}` : "";
  const rule = request.decided_by_rule ? ` (rule ${request.decided_by_rule})` : "";
  const person = request.decided_by ? ` by ${request.decided_by}` : "";
  switch (request.status) {
    case "SUBMITTED": return "Sent; the policy has not answered yet.";
    case "PENDING_REVIEW": return `The policy sent it to an operator for review${rule}${why}.`;
    case "APPROVED": return request.decided_by_rule
      ? `Approved automatically by the policy${rule}${why}. Your grant: ${request.grant_id}.`
      : `Approved${person} after review${why}. Your grant: ${request.grant_id}.`;
    case "DENIED": return request.decided_by_rule
      ? `Denied by the policy${rule}${why}.`
      : `Denied${person} after review${why}.`;
    case "WITHDRAWN": return "You withdrew it.";
    default: return request.status;
  }
}

async function refreshMyRequests() {
  const { body, count } = panel("my-requests");
  catalogNow = await api("GET", "/v1/datasets");
  fillRequestForm(catalogNow);
  const requests = await api("GET", "/v1/requests");
  requests.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  count.textContent = `(${requests.length})`;
  if (requests.length === 0) return body.replaceChildren(emptyRow(5, "no requests yet"));
  syncRows(body, requests, (request) => request.request_id, (request) => el("tr", { "data-request-id": request.request_id },
    el("td", { class: "id" }, request.request_id),
    el("td", { class: "id" }, request.dataset_id),
    el("td", { class: "text" }, request.purpose),
    el("td", {}, el("span", { class: `request-status status-${request.status}` }, request.status)),
    el("td", { class: "text answer" }, answerInWords(request)),
  ));
}

function monthsBack(count) {
  const now = new Date();
  return [...Array(count).keys()].map((back) => {
    const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - back, 1));
    return month.toISOString().slice(0, 7);
  });
}

async function refreshMyStatements() {
  const { body } = panel("my-statements");
  const periods = await Promise.all(monthsBack(2).map((period) => api("GET", `/v1/statements?period=${period}`)));
  const statements = periods.flatMap((answer) => answer.statements);
  if (statements.length === 0) return body.replaceChildren(emptyRow(5, "no statements issued for this month or the last"));
  syncRows(body, statements, (s) => s.statement_id, (s) => el("tr", {},
    el("td", { class: "id" }, s.statement_id),
    el("td", {}, s.period),
    el("td", {}, s.lines.map((line) => el("div", {}, `${line.dataset_id}: ${number(line.records)} records, ${line.amount}`))),
    el("td", { class: "number" }, `${s.total} ${s.currency}`),
    el("td", {}, s.issued_at ? when(s.issued_at) : "not yet"),
  ));
}

function showCredentials(credentials) {
  const list = document.getElementById("kafka-credentials");
  const rows = [
    ["username", credentials.username], ["password (shown once)", credentials.password],
    ["bootstrap servers", credentials.bootstrap_servers], ["security protocol", credentials.security_protocol],
    ["SASL mechanism", credentials.sasl_mechanism], ["schema registry", credentials.schema_registry_url],
    ["your topics and group prefix", credentials.topic_prefix],
  ];
  list.replaceChildren(...rows.filter(([, value]) => value).flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, el("code", {}, value))]));
  list.hidden = false;
}

// ----------------------------------------------------------------------------------------- request form

let catalogNow = [];

function fillRequestForm(datasets) {
  const form = document.getElementById("request-form");
  const select = form.elements.dataset_id;
  const open = datasets.filter((dataset) => !dataset.retired);
  const wanted = select.value;
  const ids = open.map((dataset) => dataset.dataset_id).join("\u0000");
  if (select.dataset.ids !== ids) {
    select.replaceChildren(...open.map((dataset) => el("option", { value: dataset.dataset_id }, `${dataset.dataset_id} — ${dataset.title}`)));
    select.dataset.ids = ids;
    if (wanted) select.value = wanted;
    showFieldChoices();
  }
  if (!form.elements.valid_from.value) {
    const today = new Date();
    form.elements.valid_from.value = today.toISOString().slice(0, 10);
    form.elements.valid_until.value = new Date(today.getTime() + 30 * 86400000).toISOString().slice(0, 10);
  }
}

function schemaFields(dataset) {
  try {
    const schema = typeof dataset.record_schema === "string" ? JSON.parse(dataset.record_schema) : dataset.record_schema;
    return schema.fields.map((field) => field.name);
  } catch (error) {
    return [];
  }
}

function showFieldChoices() {
  const form = document.getElementById("request-form");
  const dataset = catalogNow.find((d) => d.dataset_id === form.elements.dataset_id.value);
  const sensitive = new Set(dataset ? Object.keys(sensitiveOf(dataset)) : []);
  form.querySelector(".fields").replaceChildren(...(dataset ? schemaFields(dataset) : []).map((field) =>
    el("label", { class: "field" }, el("input", { type: "checkbox", name: "field", value: field, checked: !sensitive.has(field) }),
      ` ${field}`, sensitive.has(field) ? el("span", { class: "muted" }, " (sensitive)") : null)));
}

function dayStart(value) {
  return new Date(`${value}T00:00:00Z`).toISOString();
}

async function submitRequest(event) {
  event.preventDefault();
  const form = event.target;
  const notice = document.getElementById("policy-answer");
  const fields = [...form.querySelectorAll('input[name="field"]:checked')].map((box) => box.value);
  if (fields.length === 0) return say(notice, "choose at least one field", "error");
  const body = {
    dataset_id: form.elements.dataset_id.value,
    purpose: form.elements.purpose.value.trim(),
    fields,
    valid_from: dayStart(form.elements.valid_from.value),
    valid_until: dayStart(form.elements.valid_until.value),
  };
  const filter = form.elements.row_filter.value.trim();
  if (filter) body.row_filter = filter;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const submitted = await api("POST", "/v1/requests", body);
    say(notice, `request ${submitted.request_id}: ${answerInWords(submitted)}`, "idle");
    form.elements.purpose.value = "";
    watchAnswer(submitted.request_id, notice);
    await refresh();
  } catch (error) {
    say(notice, error.message, "error");
  } finally {
    button.disabled = false;
  }
}

// Ask for the request until the policy has answered (the authorization worker decides it from its event).
async function watchAnswer(requestId, notice) {
  for (let attempt = 0; attempt < 60; attempt += 1) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    let request;
    try {
      request = await api("GET", `/v1/requests/${encodeURIComponent(requestId)}`);
    } catch (error) {
      return say(notice, error.message, "error");
    }
    if (request.status !== "SUBMITTED") {
      const kind = request.status === "DENIED" ? "error" : request.status === "APPROVED" ? "done" : "idle";
      say(notice, `request ${requestId}: ${answerInWords(request)}`, kind);
      return refresh();
    }
  }
  say(notice, `request ${requestId}: no answer from the policy within a minute; it stays in "My requests"`, "idle");
}

// ----------------------------------------------------------------------------------------------- catalog

function sensitiveOf(dataset) {
  const found = {};
  for (const item of dataset.sensitive_fields || []) found[item.field] = item.masking;
  try {
    const schema = typeof dataset.record_schema === "string" ? JSON.parse(dataset.record_schema) : dataset.record_schema;
    for (const field of schema.fields) if (field["pdo.sensitive"] && !found[field.name]) found[field.name] = field["pdo.sensitive"];
  } catch (error) {
    // a schema the page cannot read shows the declared list only
  }
  return found;
}

function priceInWords(plan) {
  if (!plan) return "";
  const kind = String(plan.kind || "").toLowerCase().replaceAll("_", " ");
  const tiers = plan.tiers && plan.tiers.length ? `, ${plan.tiers.length} tiers` : "";
  return `${plan.unit_price} ${plan.currency} ${kind}${tiers}`;
}

let grantsCache = null;
async function grantsNow() {
  if (!grantsCache) grantsCache = api("GET", "/v1/grants");
  return grantsCache;
}

async function refreshCatalog() {
  const { body, count } = panel("catalog");
  const datasets = await api("GET", "/v1/datasets");
  const grants = me.kind === "provider" ? [] : await grantsNow();
  const holders = new Map();
  for (const grant of grants.filter((g) => LIVE_GRANTS.has(g.status))) {
    const list = holders.get(grant.dataset_id) || [];
    list.push(`${grant.tenant_id} (${grant.status})`);
    holders.set(grant.dataset_id, list);
  }
  count.textContent = `(${datasets.length})`;
  if (datasets.length === 0) return body.replaceChildren(emptyRow(8, "no datasets registered"));
  // The holders are part of each row's data, so a row changes when a grant does.
  const rows = datasets.map((d) => ({ ...d, holders: holders.get(d.dataset_id) || ["none"] }));
  syncRows(body, rows, (d) => d.dataset_id, catalogRow);
}

// One dataset with the tenants holding grants on it (`holders`).
function catalogRow(d) {
  return el("tr", { "data-dataset-id": d.dataset_id },
    el("td", {}, el("div", { class: "id" }, d.dataset_id), el("div", { class: "muted" }, d.title), lineageOf(d),
      d.retired ? el("div", { class: "status-REVOKED" }, "retired") : null),
    el("td", {}, d.provider_id, el("div", { class: "muted" }, d.owner_department)),
    el("td", {}, d.domain),
    el("td", {}, el("span", { class: `grade grade-${d.classification}` }, d.classification)),
    el("td", {}, d.openness),
    el("td", {}, Object.entries(sensitiveOf(d)).map(([field, masking]) => el("span", { class: "field" }, `${field} (${masking})`))),
    el("td", {}, priceInWords(d.price_plan)),
    el("td", { class: "holders" }, d.holders.map((h) => el("span", { class: "field" }, h))),
  );
}

// ------------------------------------------------------------------------------------------------- audit

function isoOrNull(localValue) {
  return localValue ? new Date(localValue).toISOString() : null;
}

async function refreshCheckpoint() {
  const box = document.getElementById("checkpoint");
  const list = box.querySelector("dl");
  try {
    const checkpoint = await api("GET", "/v1/audit/checkpoints/latest");
    list.replaceChildren(...[["entries signed", number(checkpoint.size)], ["root", checkpoint.root],
      ["signed at", when(checkpoint.signed_at)], ["key", checkpoint.key_id]].flatMap(([name, value]) => [el("dt", {}, name), el("dd", { class: "id" }, value)]));
    box.dataset.size = String(checkpoint.size);
    say(box.querySelector(".status"), "");
  } catch (error) {
    if (error.status !== 404) throw error;
    list.replaceChildren();
    say(box.querySelector(".status"), "no checkpoint signed yet (the audit worker signs one every minute)", "idle");
  }
}

async function refreshAudit() {
  await refreshCheckpoint();
  const form = document.getElementById("audit-form");
  const query = new URLSearchParams({ limit: "100" });
  for (const name of ["subject", "tenant"]) if (form.elements[name].value.trim()) query.set(name, form.elements[name].value.trim());
  for (const name of ["since", "until"]) {
    const value = isoOrNull(form.elements[name].value);
    if (value) query.set(name, value);
  }
  const { entries } = await api("GET", `/v1/audit/entries?${query}`);
  const body = document.querySelector("#audit tbody");
  if (entries.length === 0) return body.replaceChildren(emptyRow(7, "no entries match"));
  syncRows(body, entries, (entry) => String(entry.seq), (entry) => el("tr", { "data-seq": entry.seq },
    el("td", { class: "number" }, entry.seq),
    el("td", {}, when(entry.occurred_at)),
    el("td", {}, entry.actor),
    el("td", {}, entry.action),
    el("td", { class: "id" }, entry.subject),
    el("td", { class: "text" }, entry.reason || ""),
    el("td", {}, el("button", { type: "button", class: "prove", onclick: () => showProof(entry.seq) }, "Prove")),
  ));
}

function hex(bytes) {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(text) {
  return new Uint8Array(text.match(/../g).map((pair) => parseInt(pair, 16)));
}

async function sha256(...parts) {
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { joined.set(part, at); at += part.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

// RFC 9162 section 2.1.3.2: the root an inclusion path leads to from a leaf hash.
async function rootFromPath(leafIndex, treeSize, leafHash, path) {
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leafHash;
  const node = Uint8Array.of(1);
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(node, p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await sha256(node, r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn === 0 ? r : null;
}

async function showProof(seq) {
  const box = document.getElementById("proof");
  const verdict = box.querySelector(".verdict");
  box.hidden = false;
  box.querySelector(".count").textContent = `for entry ${seq}`;
  try {
    const proof = await api("GET", `/v1/audit/proof?entry=${seq}`);
    const leaf = await sha256(Uint8Array.of(0), new TextEncoder().encode(proof.entry.body));
    const root = await rootFromPath(proof.inclusion.leaf_index, proof.inclusion.tree_size, leaf, proof.inclusion.path.map(fromHex));
    const signedRoot = hex(Uint8Array.from(atob(proof.checkpoint.root), (c) => c.charCodeAt(0)));
    const ok = hex(leaf) === proof.entry.leaf_hash && root !== null && hex(root) === signedRoot;
    box.querySelector("dl").replaceChildren(...[
      ["entry", proof.entry.body], ["leaf hash", proof.entry.leaf_hash],
      ["checkpoint", `${number(proof.checkpoint.size)} entries, root ${proof.checkpoint.root}, signed ${when(proof.checkpoint.signed_at)} by key ${proof.checkpoint.key_id}`],
      ["path", proof.inclusion.path.join(" ")],
    ].flatMap(([name, value]) => [el("dt", {}, name), el("dd", { class: "id" }, value)]));
    say(verdict, ok
      ? `verified in this browser: entry ${seq} is in the log the checkpoint of size ${proof.checkpoint.size} signed (check the signature offline with pdo audit verify-proof)`
      : `the proof does NOT lead to the signed root: report it`, ok ? "done" : "error");
    box.dataset.verified = String(ok);
  } catch (error) {
    say(verdict, error.status === 404 || error.status === 422
      ? `no proof yet: ${error.message} (entries are provable once a checkpoint covers them)`
      : error.message, "error");
    box.dataset.verified = "false";
  }
}

// ------------------------------------------------------------------------------------ refresh and key

const PANELS = {
  charts: () => Promise.all([refreshCharts("charts"), refreshRevenue()]).then(() => ""),
  requests: refreshRequests,
  grants: refreshGrants,
  usage: refreshUsage,
  "dead-letters": refreshDeadLetters,
  "my-grants": refreshMyGrants,
  "my-usage": () => refreshCharts("my-usage").then(() => ""),
  "my-requests": refreshMyRequests,
  "my-statements": refreshMyStatements,
  catalog: refreshCatalog,
  audit: refreshAudit,
};
const NO_STATUS = new Set(["charts", "my-usage"]); // their charts have status lines of their own
let timer = null;
let page = null;

function visibleSections() {
  return [...document.querySelectorAll("#panels > section")].filter((section) => !section.hidden);
}

// Refresh every visible panel; a panel whose call fails says why in its status line and keeps its last rows.
async function refresh() {
  clearTimeout(timer);
  if (!sessionStorage.getItem(KEY_STORAGE) || !me) return;
  grantsCache = null;
  await Promise.all(visibleSections().filter((s) => PANELS[s.id]).map(async (section) => {
    const status = section.querySelector(":scope > .status:not(.notice)");
    try {
      const [text, kind] = (await PANELS[section.id]()) || ["", ""];
      if (status && !NO_STATUS.has(section.id)) say(status, text, kind);
    } catch (error) {
      if (status) say(status, error.message, "error");
    }
  }));
  document.getElementById("refreshed").textContent = `refreshed ${new Date().toLocaleTimeString()}`;
  // An action's refresh may have overlapped this one: keep a single timer either way.
  clearTimeout(timer);
  if (sessionStorage.getItem(KEY_STORAGE)) timer = setTimeout(refresh, REFRESH_MS);
}

function showPage(name) {
  page = name;
  for (const section of document.querySelectorAll("#panels > section")) {
    section.hidden = !(section.dataset.roles.split(" ").includes(me.kind) && section.dataset.page === name);
  }
  for (const button of document.querySelectorAll("#nav button")) button.classList.toggle("current", button.dataset.page === name);
  document.body.dataset.page = name;
  refresh();
}

function showPanels(signedIn) {
  document.getElementById("sign-in").hidden = signedIn;
  document.getElementById("panels").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  document.getElementById("nav").hidden = !signedIn;
  if (!signedIn) document.getElementById("whoami").textContent = "";
}

function signOut(why) {
  clearTimeout(timer);
  sessionStorage.removeItem(KEY_STORAGE);
  me = null;
  showPanels(false);
  say(document.getElementById("sign-in-status"), why || "", why ? "error" : "");
}

// Ask who the key belongs to, then show that kind's pages.
async function start() {
  const status = document.getElementById("sign-in-status");
  say(status, "checking the key…");
  try {
    me = await api("GET", "/v1/me");
  } catch (error) {
    if (error.status !== 401) signOut(error.message); // on 401 api() signed out and said why
    return;
  }
  const pages = PAGES[me.kind];
  if (!pages) return signOut(`the console has no pages for a ${me.kind}'s key`);
  say(status, "");
  document.body.dataset.role = me.kind;
  document.getElementById("whoami").textContent = `${me.principal_id} (${me.kind})`;
  document.getElementById("nav").replaceChildren(...pages.map(([name, label]) =>
    el("button", { type: "button", "data-page": name, onclick: () => showPage(name) }, label)));
  showPanels(true);
  showPage(pages[0][0]);
}

async function kafkaAction(button, method, done) {
  const notice = document.querySelector("#my-kafka .notice");
  button.disabled = true;
  try {
    const answer = await api(method, "/v1/kafka-credentials");
    if (method === "POST") showCredentials(answer);
    else {
      const shown = document.getElementById("kafka-credentials");
      shown.replaceChildren(); // the revoked password leaves the page, not only the view
      shown.hidden = true;
    }
    say(notice, done(answer), "done");
  } catch (error) {
    say(notice, error.message, "error");
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("key");
    const key = input.value.trim();
    input.value = "";
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    start();
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  document.getElementById("grant-filter").addEventListener("change", refresh);
  document.getElementById("request-form").addEventListener("submit", submitRequest);
  document.getElementById("request-form").elements.dataset_id.addEventListener("change", showFieldChoices);
  document.getElementById("audit-form").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  const issue = document.getElementById("kafka-issue");
  issue.addEventListener("click", () => kafkaAction(issue, "POST", (c) => `issued: user ${c.username}`));
  const revoke = document.getElementById("kafka-revoke");
  revoke.addEventListener("click", () => kafkaAction(revoke, "DELETE", () => "revoked: your Kafka credentials no longer work"));
  if (sessionStorage.getItem(KEY_STORAGE)) start();
});
