// guardproxy web console: the held-actions queue (live), a hold's detail with approve /
// deny, and the decision history. Plain DOM, no framework, no build step.
//
// Security rules this file keeps:
// - everything shown comes from agents (action names, messages, request bodies), so it is
//   only ever written with textContent / createTextNode, never as HTML;
// - the approver token lives in sessionStorage (this tab only) and travels in the
//   Authorization header, never in a URL (live updates use fetch streaming, not EventSource,
//   precisely so the token can stay in a header).
"use strict";

(() => {
  const TOKEN_KEY = "guardproxy.token";
  const MAX_RECONNECT_MS = 30000;
  const byId = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let stream = null; // AbortController of the live-updates connection
  let currentView = "";
  let currentHoldId = "";
  let flashTimer = 0;

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.status = status;
      this.data = data;
    }
  }

  // ------------------------------------------------------------------ DOM helpers

  // el("li", {class: "card"}, "text", child) -> element; strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "href") node.setAttribute("href", safeHref(value));
      else node.setAttribute(name, String(value));
    }
    for (const child of children) append(node, child);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) child.forEach((c) => append(node, c));
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }

  // Links the console builds are in-page routes; anything else is refused.
  function safeHref(value) {
    const text = String(value);
    return text.startsWith("#/") ? text : "#/";
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(id, visible) {
    byId(id).hidden = !visible;
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function flash(text, kind) {
    const node = byId("flash");
    node.textContent = text;
    node.className = "flash" + (kind ? " " + kind : "");
    node.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => {
      node.hidden = true;
    }, 6000);
  }

  // A value of any shape (from the API) as nested lists, all text.
  function renderValue(value) {
    if (value === null || value === undefined || value === "") return el("span", { class: "muted" }, "—");
    if (Array.isArray(value)) {
      if (value.length === 0) return el("span", { class: "muted" }, "none");
      if (value.every((v) => typeof v !== "object" || v === null)) {
        return el("ul", { class: "chips" }, value.map((v) => el("li", {}, String(v))));
      }
      return el("ol", { class: "items" }, value.map((v) => el("li", {}, renderValue(v))));
    }
    if (typeof value === "object") {
      const entries = Object.entries(value).filter(([, v]) => !isEmpty(v));
      if (entries.length === 0) return el("span", { class: "muted" }, "none");
      return el(
        "dl",
        { class: "kv" },
        entries.map(([k, v]) => [el("dt", {}, k), el("dd", {}, renderValue(v))]),
      );
    }
    if (typeof value === "string" && value.length > 120) return el("pre", {}, value);
    return el("span", {}, String(value));
  }

  function isEmpty(value) {
    if (value === null || value === undefined || value === "") return true;
    if (Array.isArray(value)) return value.length === 0;
    if (typeof value === "object") return Object.values(value).every(isEmpty);
    return false;
  }

  function section(title, ...content) {
    return el("section", { class: "panel" }, el("h2", {}, title), ...content);
  }

  // A panel people can fold away (closed for the long, rarely needed parts).
  function folding(title, open, ...content) {
    const node = el("details", { class: "panel" }, el("summary", {}, title), ...content);
    node.open = open;
    return node;
  }

  // ------------------------------------------------------------------- the API

  async function api(path, options) {
    const opts = options || {};
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: opts.method || "GET",
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401 && !opts.login) {
      signOut("Your token was refused; sign in again.");
    }
    if (!response.ok) {
      let message = (data && data.error) || response.status + " " + response.statusText;
      if (data && data.hint) message += " (" + data.hint + ")";
      throw new ApiError(response.status, message, data);
    }
    return data;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v) search.set(k, v);
    const text = search.toString();
    return text ? "?" + text : "";
  }

  // -------------------------------------------------------------- sign in / out

  async function signIn(candidate) {
    token = candidate;
    const me = await api("/v1/whoami", { login: true });
    if (me.kind !== "approver") {
      throw new ApiError(403, "That is the admin token: it cannot decide holds. Use your approver token (guardproxy approvers add).");
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    return me;
  }

  function showIdentity(me) {
    const name = (me && (me.name || me.approver || me.id)) || "";
    const groups = me && Array.isArray(me.groups) && me.groups.length ? " (" + me.groups.join(", ") + ")" : "";
    byId("who").textContent = name ? "Signed in as " + name + groups : "";
  }

  function signOut(message) {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    if (stream) stream.abort();
    stream = null;
    setLive(false);
    byId("who").textContent = "";
    location.hash = "#/";
    render();
    if (message) {
      const error = byId("login-error");
      error.textContent = message;
      error.hidden = false;
    }
  }

  // -------------------------------------------------------------- live updates

  function setLive(live) {
    const node = byId("live");
    node.textContent = live ? "live" : "offline";
    node.className = "live" + (live ? " on" : "");
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Server-sent events read with fetch so the token stays in the Authorization header.
  async function connectEvents() {
    if (stream || !token) return;
    const controller = new AbortController();
    stream = controller;
    let delay = 1000;
    while (stream === controller) {
      try {
        const response = await fetch("/v1/events", {
          headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" },
          signal: controller.signal,
          cache: "no-store",
          credentials: "omit",
        });
        if (response.status === 401) {
          signOut("Your token was refused; sign in again.");
          return;
        }
        if (!response.ok || !response.body) throw new Error("events: " + response.status);
        setLive(true);
        delay = 1000;
        refreshView(); // catch up on anything missed while disconnected
        await readEvents(response.body);
      } catch (_) {
        if (controller.signal.aborted) return;
      }
      if (stream !== controller) return;
      setLive(false);
      await sleep(delay + Math.random() * 500);
      delay = Math.min(delay * 2, MAX_RECONNECT_MS);
    }
  }

  async function readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatchBlock(block);
      }
    }
  }

  function dispatchBlock(block) {
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
    }
    if (data.length === 0) return;
    let event;
    try {
      event = JSON.parse(data.join("\n"));
    } catch (_) {
      return;
    }
    onHoldEvent(event);
  }

  const EVENT_WORDS = {
    held: "held",
    approval: "got an approval",
    approved: "approved",
    denied: "denied",
    expired: "expired (denied)",
    escalated: "escalated",
    released: "released",
  };

  function onHoldEvent(event) {
    const who = event.actor ? " by " + event.actor : "";
    flash((event.summary || event.hold_id) + ": " + (EVENT_WORDS[event.kind] || event.kind) + who);
    if (currentView === "queue") loadQueue();
    else if (currentView === "detail" && event.hold_id === currentHoldId) loadDetail(currentHoldId);
  }

  // --------------------------------------------------------------------- views

  function route() {
    const hash = location.hash || "#/";
    const [path, search] = hash.slice(1).split("?");
    const hold = /^\/holds\/([\w-]+)$/.exec(path);
    if (hold) return { view: "detail", id: hold[1] };
    if (path === "/history") return { view: "history", params: new URLSearchParams(search || "") };
    return { view: "queue" };
  }

  function render() {
    const signedIn = Boolean(token);
    show("nav", signedIn);
    show("login-view", !signedIn);
    for (const id of ["queue-view", "detail-view", "history-view"]) show(id, false);
    if (!signedIn) {
      currentView = "";
      byId("token").focus();
      return;
    }
    const where = route();
    currentView = where.view;
    currentHoldId = where.view === "detail" ? where.id : "";
    for (const link of document.querySelectorAll("#nav a[data-route]")) {
      link.classList.toggle("active", link.dataset.route === where.view);
    }
    show(where.view + "-view", true);
    if (where.view === "queue") loadQueue();
    else if (where.view === "detail") {
      byId("reason").value = "";
      byId("resolve-error").hidden = true;
      loadDetail(where.id);
    } else loadHistory(where.params);
  }

  function refreshView() {
    if (currentView === "queue") loadQueue();
    else if (currentView === "detail") loadDetail(currentHoldId);
  }

  // -- queue

  let queueSerial = 0;

  async function loadQueue() {
    const serial = ++queueSerial;
    let data;
    try {
      data = await api("/v1/holds?state=pending");
    } catch (error) {
      if (serial === queueSerial) flash("Cannot load held actions: " + error.message, "bad");
      return;
    }
    if (serial !== queueSerial || currentView !== "queue") return;
    const holds = data.holds || [];
    const list = byId("queue");
    clear(list);
    byId("queue-count").textContent = holds.length ? "(" + holds.length + ")" : "";
    show("queue-empty", holds.length === 0);
    for (const hold of holds) list.appendChild(holdCard(hold));
  }

  function holdCard(hold) {
    const progress = progressText(hold);
    return el(
      "li",
      { class: "card", "data-hold": hold.id },
      el("a", { href: "#/holds/" + hold.id, class: "card-link" },
        el("span", { class: "summary" }, hold.summary || hold.id)),
      hold.message ? el("p", { class: "message" }, hold.message) : null,
      el(
        "p",
        { class: "meta" },
        el("span", {}, hold.id),
        el("span", {}, "session " + sessionName(hold)),
        el("span", {}, "held " + when(hold.created_at)),
        hold.expires_at ? el("span", {}, "expires " + when(hold.expires_at)) : null,
        progress ? el("span", { class: "progress" }, progress) : null,
      ),
      onCallList(hold),
    );
  }

  // "On call (platform-primary): alice (rotation …); level 1 (…) paged via pagerduty at …",
  // one line per on-call group of a pending hold; a stale roster is marked as such.
  function onCallList(hold) {
    const groups = Array.isArray(hold.oncall) ? hold.oncall : [];
    if (groups.length === 0) return null;
    return el("ul", { class: "oncall" }, groups.map((g) =>
      el("li", { class: g.stale ? "stale" : "" },
        el("strong", {}, "On call (" + String(g.schedule || "") + "): "),
        String(g.summary || ""), " ",
        el("span", { class: g.paged ? "paged" : "muted" }, String(g.paged_text || "")))));
  }

  // "s-1 (ended)" when the session that made the request is over: nothing waits live.
  function sessionName(hold) {
    return String(hold.session || "") + (hold.session_ended ? " (ended)" : "");
  }

  // "1 of 2 approvals; needs 1 more approval from sre-oncall (rule …)": the server's
  // text says what each rule still needs.
  function progressText(hold) {
    const p = hold.progress;
    if (!p || typeof p !== "object") return "";
    if (p.text) return p.text;
    const parts = [];
    if (p.quorum !== undefined) parts.push((p.approvers || []).length + " of " + p.quorum + " approvals");
    if (p.needs) parts.push("needs " + p.needs);
    return parts.join("; ");
  }

  // -- detail

  const WINDOWS = [["m1", "last minute"], ["m10", "last 10 minutes"], ["h1", "last hour"], ["session", "whole session"]];

  // Non-zero counts only: "delete 2, read 5".
  function nonZero(counts) {
    if (!counts || typeof counts !== "object") return "";
    return Object.entries(counts).filter(([, n]) => n).map(([k, n]) => k + " " + n).join(", ");
  }

  function renderHistory(history) {
    const rows = WINDOWS.filter(([key]) => history[key]).map(([key, title]) => {
      const c = history[key];
      const detail = [nonZero(c.verb), nonZero(c.environment)].filter(Boolean).join("; ");
      return el("tr", {}, el("td", {}, title), el("td", {}, String(c.total || 0)),
        el("td", {}, String(c.destructive || 0)), el("td", {}, detail));
    });
    const table = el("table", { class: "compact" },
      el("thead", {}, el("tr", {}, el("th", {}, "Window"), el("th", {}, "Actions"), el("th", {}, "Destructive"), el("th", {}, "Of which"))),
      el("tbody", {}, rows));
    const recent = Array.isArray(history.recent) ? history.recent : [];
    const list = recent.length
      ? el("ol", { class: "items recent" }, recent.slice().reverse().map((r) =>
        el("li", {}, el("span", { class: "outcome " + (r.outcome || "") }, r.outcome || ""), " ", r.summary || r.resource_key || "", " ",
          el("span", { class: "muted" }, [r.environment, when(r.at)].filter(Boolean).join(", ")))))
      : el("p", { class: "muted" }, "No earlier actions in this session.");
    return [el("div", { class: "table-wrap" }, table), el("h3", {}, "Recent actions (newest first)"), list];
  }

  function renderSignals(signals) {
    const raised = Object.entries(signals || {}).filter(([k, v]) => k !== "description" && v === true);
    const items = raised.map(([k]) => el("li", { class: "signal" }, label(k)));
    return [
      raised.length ? el("ul", { class: "chips" }, items) : el("p", { class: "muted" }, "No sequence signal raised."),
      signals && signals.description ? el("p", {}, signals.description) : null,
    ];
  }

  function renderApprovals(approvals) {
    if (!Array.isArray(approvals) || approvals.length === 0) return el("p", { class: "muted" }, "Nobody yet.");
    return el("ol", { class: "items" }, approvals.map((a) =>
      el("li", {}, el("strong", {}, a.approver + " " + (a.verdict === "deny" ? "denied" : "approved")),
        a.groups && a.groups.length ? " (" + a.groups.join(", ") + ")" : "", " — ", a.reason || "",
        " ", el("span", { class: "muted" }, when(a.at)))));
  }

  function renderRequest(request) {
    const parts = [el("pre", { class: "request-line" }, (request.method || "") + " " + (request.url || ""))];
    const headers = request.headers;
    if (Array.isArray(headers) && headers.every((h) => Array.isArray(h) && h.length === 2)) {
      parts.push(el("h3", {}, "Headers"),
        el("dl", { class: "kv" }, headers.map(([k, v]) => [el("dt", {}, String(k)), el("dd", {}, String(v))])));
    } else if (headers) {
      parts.push(el("h3", {}, "Headers"), renderValue(headers));
    }
    const rest = Object.fromEntries(Object.entries(request).filter(([k]) => !["method", "url", "headers"].includes(k)));
    if (!isEmpty(rest)) parts.push(el("h3", {}, "Body"), renderValue(rest.body !== undefined && Object.keys(rest).length === 1 ? rest.body : rest));
    return parts;
  }

  let detailSerial = 0;

  async function loadDetail(id) {
    const serial = ++detailSerial;
    let hold;
    try {
      hold = await api("/v1/holds/" + encodeURIComponent(id));
    } catch (error) {
      if (serial !== detailSerial) return;
      byId("detail-title").textContent = id;
      byId("detail-state").textContent = error.status === 404 ? "No such hold." : "Cannot load: " + error.message;
      clear(byId("detail-body"));
      show("resolve-form", false);
      return;
    }
    if (serial !== detailSerial || currentHoldId !== id) return;
    renderDetail(hold);
  }

  function renderDetail(hold) {
    byId("detail-title").textContent = hold.summary || hold.id;
    const state = byId("detail-state");
    const resolved = hold.resolved_by ? " by " + hold.resolved_by : "";
    const why = hold.reason ? ": " + hold.reason : "";
    state.textContent = hold.id + " — " + hold.state + resolved + why +
      (hold.state === "pending" && hold.expires_at ? " (expires " + when(hold.expires_at) + ")" : "");
    state.className = "state " + hold.state;
    const body = byId("detail-body");
    // a live re-render keeps the panels the reader opened or closed
    const folded = new Map([...body.querySelectorAll("details")].map((d) => [d.firstChild.textContent, d.open]));
    clear(body);
    const progress = progressText(hold);
    const parts = [];
    if (progress) parts.push(el("p", { class: "progress-line" }, "Approvals: " + progress));
    if (hold.release) parts.push(el("p", { class: "release-line" }, "What approval lets through: " + hold.release));
    const onCall = onCallList(hold);
    if (onCall) parts.push(section("Who is on call for it now", onCall));
    parts.push(section("Why it is held",
      el("p", { class: "message" }, hold.message || ""),
      el("h3", {}, "Determining rules"), renderValue(hold.rules || [])));
    if (hold.request && !isEmpty(hold.request)) {
      parts.push(section("Request that will be sent (redacted)", ...renderRequest(hold.request)));
    }
    parts.push(section("Approvals so far", renderApprovals(hold.approvals)));
    if (hold.signals) parts.push(section("Sequence signals", ...renderSignals(hold.signals)));
    parts.push(folding("Action", false, renderValue(hold.action || {})));
    if (hold.session_info) parts.push(folding("Session", false, renderValue(hold.session_info)));
    if (hold.history && !isEmpty(hold.history)) parts.push(folding("Session history", true, ...renderHistory(hold.history)));
    if (hold.resource && !isEmpty(hold.resource)) parts.push(folding("History of the resource", false, renderValue(hold.resource)));
    if (hold.approval) parts.push(folding("Approval requirement", false, renderValue({ ...hold.approval, grant: hold.grant })));
    if (hold.session) {
      parts.push(el("p", {}, el("a", { href: "#/history?session=" + encodeURIComponent(hold.session) }, "All decisions of this session")));
    }
    for (const part of parts) {
      if (part.tagName === "DETAILS" && folded.has(part.firstChild.textContent)) part.open = folded.get(part.firstChild.textContent);
      body.appendChild(part);
    }
    show("resolve-form", hold.state === "pending");
  }

  function label(key) {
    return key.replace(/_/g, " ");
  }

  async function resolve(event) {
    event.preventDefault();
    const verb = event.submitter && event.submitter.value === "deny" ? "deny" : "approve";
    const reasonField = byId("reason");
    const reason = reasonField.value.trim();
    const error = byId("resolve-error");
    if (!reason) {
      error.textContent = "Say why: a reason is required.";
      error.hidden = false;
      reasonField.focus();
      return;
    }
    error.hidden = true;
    const id = currentHoldId;
    for (const button of document.querySelectorAll("#resolve-form button")) button.disabled = true;
    try {
      const answer = await api("/v1/holds/" + encodeURIComponent(id) + "/" + verb, { method: "POST", body: { reason } });
      const hold = answer && answer.hold ? answer.hold : answer;
      reasonField.value = "";
      flash((hold.summary || id) + ": " + ((answer && answer.outcome) || hold.state), "good");
      if (currentHoldId === id) renderDetail(hold);
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
      if (failure.data && failure.data.hold && currentHoldId === id) renderDetail(failure.data.hold);
    } finally {
      for (const button of document.querySelectorAll("#resolve-form button")) button.disabled = false;
    }
  }

  // -- history

  async function loadHistory(params) {
    const form = byId("history-form");
    for (const name of ["session", "outcome", "provider"]) form.elements[name].value = params.get(name) || "";
    const since = params.get("since") || "";
    form.elements.since.value = since ? toLocalInput(since) : "";
    const tbody = byId("history").tBodies[0];
    let data;
    try {
      data = await api("/v1/decisions" + query({
        session: params.get("session"),
        outcome: params.get("outcome"),
        provider: params.get("provider"),
        since,
        limit: "200",
      }));
    } catch (error) {
      flash("Cannot load decisions: " + error.message, "bad");
      return;
    }
    if (currentView !== "history") return;
    clear(tbody);
    const decisions = data.decisions || [];
    show("history-empty", decisions.length === 0);
    for (const d of decisions) tbody.appendChild(decisionRow(d));
  }

  function decisionRow(d) {
    const action = d.action || {};
    const resource = action.resource || {};
    const what = d.summary || [action.provider, action.service, action.operation, resource.name].filter(Boolean).join(" ");
    const rules = d.rules || d.determining_rules || [];
    const holdLink = d.hold_id ? el("a", { href: "#/holds/" + d.hold_id }, d.hold_id) : null;
    return el(
      "tr",
      {},
      el("td", { "data-label": "When" }, when(d.at || d.created_at || d.decided_at)),
      el("td", { "data-label": "Outcome" }, el("span", { class: "outcome " + d.outcome }, d.outcome), holdLink ? [" ", holdLink] : null),
      el("td", { "data-label": "Action" }, what),
      el("td", { "data-label": "Session" }, d.session || d.session_id || ""),
      el("td", { "data-label": "Rules" }, Array.isArray(rules) ? rules.join(", ") : String(rules)),
    );
  }

  function toLocalInput(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
    return local.toISOString().slice(0, 16);
  }

  function filterHistory(event) {
    event.preventDefault();
    const form = event.target;
    const since = form.elements.since.value;
    location.hash = "#/history" + query({
      session: form.elements.session.value.trim(),
      outcome: form.elements.outcome.value,
      provider: form.elements.provider.value.trim(),
      since: since ? new Date(since).toISOString() : "",
    });
  }

  // ---------------------------------------------------------------------- wiring

  async function onLogin(event) {
    event.preventDefault();
    const field = byId("token");
    const error = byId("login-error");
    error.hidden = true;
    try {
      const me = await signIn(field.value.trim());
      field.value = "";
      showIdentity(me);
      render();
      connectEvents();
    } catch (failure) {
      token = "";
      error.textContent = failure.status === 401 ? "That token is not valid." : failure.message;
      error.hidden = false;
    }
  }

  function start() {
    byId("login-form").addEventListener("submit", onLogin);
    byId("resolve-form").addEventListener("submit", resolve);
    byId("history-form").addEventListener("submit", filterHistory);
    byId("logout").addEventListener("click", () => signOut(""));
    window.addEventListener("hashchange", render);
    render();
    if (token) {
      api("/v1/whoami").then(showIdentity, () => {});
      connectEvents();
    }
  }

  start();
})();
