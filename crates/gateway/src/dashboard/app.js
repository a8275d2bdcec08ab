// The claude-gateway dashboard: a client of the admin API, nothing more. Plain JavaScript, no build step.
// Security: the admin key is sent once, in a JSON body, to POST /admin/session; the page keeps only the CSRF token, in
// this closure's memory (never in a URL or browser storage). Every element is built with the DOM API (no HTML strings).
"use strict";
(function () {
  let csrf = null;
  let page = "overview";
  let timer = null;
  const POLL_MS = 5000;
  const $ = (id) => document.getElementById(id);

  // === DOM helpers ===
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }
  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing yet.");
    return h("div", { class: "table-wrap" },
      h("table", {},
        h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.cls || null }, x.label || x)))),
        h("tbody", {}, rows)));
  }
  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
  const usd = (n) => (n === null || n === undefined ? "–" : "$" + Number(n).toFixed(n >= 100 ? 0 : 4));
  const pct = (x) => (x === null || x === undefined ? "–" : (x * 100).toFixed(1) + " %");
  const ms = (x) => (x === null || x === undefined ? "–" : x < 1000 ? Math.round(x) + " ms" : (x / 1000).toFixed(2) + " s");
  function when(t) {
    if (!t) return "–";
    const d = new Date(t);
    const delta = (d - Date.now()) / 1000;
    const abs = Math.abs(delta);
    const rel = abs < 90 ? Math.round(abs) + " s" : abs < 5400 ? Math.round(abs / 60) + " min" : abs < 172800 ? (abs / 3600).toFixed(1) + " h" : Math.round(abs / 86400) + " d";
    return (delta >= 0 ? "in " + rel : rel + " ago") + " (" + d.toLocaleString() + ")";
  }

  // === API ===
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(method, path, body) {
    const opts = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      opts.headers["content-type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    if (method !== "GET" && csrf) opts.headers["x-csrf-token"] = csrf;
    const r = await fetch(path, opts);
    const text = await r.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (r.status === 401 && path !== "/admin/session") { showLogin("Your session has ended; log in again."); }
    if (!r.ok) throw new ApiError(r.status, (data && data.error && data.error.message) || r.status + " " + r.statusText);
    return data;
  }
  function flash(message, bad) {
    const f = $("flash");
    f.textContent = message;
    f.className = "flash" + (bad ? " bad" : "");
    f.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(() => { f.hidden = true; }, bad ? 9000 : 4000);
  }
  function confirmAction(text) {
    const d = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
      d.showModal();
    });
  }
  async function act(label, method, path, body, confirmText) {
    if (confirmText && !(await confirmAction(confirmText))) return null;
    try {
      const r = await api(method, path, body);
      flash(label + ": done");
      refresh();
      return r;
    } catch (e) {
      flash(label + ": " + e.message, true);
      return null;
    }
  }

  // === login ===
  function showLogin(message) {
    csrf = null;
    stopPolling();
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("admin-key").focus();
  }
  async function login(ev) {
    ev.preventDefault();
    const input = $("admin-key");
    const key = input.value;
    input.value = "";
    try {
      const r = await api("POST", "/admin/session", { admin_key: key });
      csrf = r.csrf_token;
      start();
    } catch (e) {
      $("login-error").textContent = e.status === 429 ? "Too many failed attempts; wait a moment." : e.message;
    }
  }
  async function logout() {
    try { await api("DELETE", "/admin/session"); } catch (_) { /* gone already */ }
    showLogin("Logged out.");
  }

  // === pages ===
  const pages = { overview, accounts, keys, usage, requests, audit, cluster };
  function route() {
    const name = (location.hash || "#overview").slice(1).split("?")[0];
    page = pages[name] ? name : "overview";
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
    $("main").replaceChildren(h("p", { class: "muted" }, "Loading…"));
    refresh(true);
  }
  let drawing = false;
  async function refresh(first) {
    if (drawing) return;
    drawing = true;
    try {
      const node = await pages[page](first);
      if (node) $("main").replaceChildren(node);
      $("live").classList.remove("stale");
      $("live").textContent = "live · " + new Date().toLocaleTimeString();
    } catch (e) {
      $("live").classList.add("stale");
      if (e.status !== 401) $("live").textContent = "update failed: " + e.message;
    } finally {
      drawing = false;
    }
  }
  function startPolling() {
    stopPolling();
    timer = setInterval(() => { if (!document.hidden && !busy()) refresh(); }, POLL_MS);
  }
  function stopPolling() { if (timer) clearInterval(timer); timer = null; }
  // A form being typed into is not redrawn under the user's fingers.
  function busy() {
    const a = document.activeElement;
    return a && $("main").contains(a) && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT");
  }

  function tile(label, value, id) {
    return h("div", { class: "tile", "data-tile": id || null }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  }
  function stateBadge(state) { return h("span", { class: "state " + state }, state.replace(/_/g, " ")); }

  async function overview() {
    const o = await api("GET", "/admin/overview");
    const today = o.today ? { tokens: o.today.tokens, cost: o.today.cost_usd } : null;
    const r = o.requests;
    const states = Object.entries(o.accounts_by_state);
    return h("div", {},
      h("h2", {}, "Overview"),
      h("div", { class: "grid" },
        tile("Requests / min", num(Math.round(r.requests_per_minute * 10) / 10), "rpm"),
        tile("Error rate (5 min)", pct(r.error_rate), "errors"),
        tile("Latency p50", ms(r.p50_ms), "p50"),
        tile("Latency p99", ms(r.p99_ms), "p99"),
        tile("Tokens today", today ? num(today.tokens) : "–", "tokens"),
        tile("Cost today", today ? usd(today.cost) : "–", "cost")),
      h("div", { class: "card" }, h("h3", {}, "Accounts by state"),
        states.length ? h("div", { class: "actions" }, states.map(([k, v]) => h("span", {}, stateBadge(k), " ", v, "  "))) : h("p", { class: "muted" }, "No accounts yet: add one on the Accounts page.")),
      h("div", { class: "card" }, h("h3", {}, "Requests per minute (this replica, last hour)"),
        barChart(r.minutes.map((m) => ({ label: new Date(m.minute * 60000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), parts: [m.requests - m.errors, m.errors] })), ["ok", "errors"], ["c0", "err"])));
  }
  const tokensOf = (r) => (r.input_tokens || 0) + (r.output_tokens || 0) + (r.cache_creation_input_tokens || 0) + (r.cache_read_input_tokens || 0);

  // === accounts ===
  function windowBars(a) {
    if (!a.windows || !a.windows.length) return h("span", { class: "muted" }, "no window reported yet");
    return a.windows.map((w) => {
      const u = w.utilization === null || w.utilization === undefined ? null : Math.max(0, Math.min(1, w.utilization));
      const bar = h("div", { class: "bar" + (u >= 1 || w.status === "rejected" ? " full" : u >= 0.8 ? " high" : "") }, h("span"));
      bar.firstChild.style.width = ((u || 0) * 100).toFixed(1) + "%";
      return h("div", { class: "win" },
        h("div", {}, w.name, " ", h("span", { class: "meta" }, pct(u), w.status ? " · " + w.status : "", w.reset ? " · resets " + when(w.reset) : "")),
        bar);
    });
  }
  function reason(a) {
    switch (a.state) {
      case "needs_reauth": return "needs login: " + (a.last_error || "log in again or re-import");
      case "banned": return "banned: " + (a.last_error || "");
      case "cooling_down": return "cooling until " + when(a.cooldown_until) + (a.last_error ? " — " + a.last_error : "");
      case "refresh_backoff": return "refresh backoff until " + when(a.refresh_retry_at) + (a.last_error ? " — " + a.last_error : "");
      case "disabled": return "disabled by an operator";
      default: return a.last_error ? "last error: " + a.last_error : "";
    }
  }
  function accountRow(a) {
    const path = "/admin/accounts/" + a.id;
    const u = a.usage || {};
    const actions = h("div", { class: "actions" },
      a.state === "disabled" || a.state === "needs_reauth"
        ? h("button", { class: "small", onclick: () => act("Enable " + a.name, "POST", path + "/enable") }, "Enable")
        : h("button", { class: "small secondary", onclick: () => act("Disable " + a.name, "POST", path + "/disable", undefined, "Disable " + a.name + "? It stops serving until enabled.") }, "Disable"),
      h("button", { class: "small secondary", onclick: () => act("Reset " + a.name, "POST", path + "/reset", undefined, "Clear the cooldowns of " + a.name + "?") }, "Reset cooldowns"),
      a.kind === "oauth" ? h("button", { class: "small secondary", onclick: () => act("Refresh " + a.name, "POST", path + "/refresh") }, "Refresh now") : null,
      h("button", { class: "small secondary", onclick: () => editAccount(a) }, "Edit"),
      h("button", { class: "small danger", onclick: () => act("Remove " + a.name, "DELETE", path, undefined, "Remove " + a.name + "? Its credential is deleted from the store.") }, "Remove"));
    return h("tr", { "data-account": a.name },
      h("td", {}, h("strong", {}, a.name), h("div", { class: "muted" }, a.kind === "oauth" ? "OAuth" + (a.email ? " · " + a.email : "") : "API key"),
        a.tags && a.tags.length ? h("div", { class: "muted" }, "tags: " + a.tags.join(", ")) : null),
      h("td", {}, stateBadge(a.state), h("div", { class: "reason" }, reason(a))),
      h("td", {}, windowBars(a)),
      h("td", { class: "num" }, a.in_flight + " / " + (a.max_concurrency || "∞")),
      h("td", { class: "num opt" }, "p" + a.priority + " · w" + a.weight),
      h("td", { class: "num opt" }, num(u.requests !== undefined ? u.requests : a.requests), h("div", { class: "muted" }, num((u.input_tokens || 0) + (u.output_tokens || 0)) + " tok")),
      h("td", {}, actions));
  }
  async function editAccount(a) {
    const name = prompt("Name", a.name);
    if (name === null) return;
    const priority = prompt("Priority (lower first)", a.priority);
    if (priority === null) return;
    const weight = prompt("Weight (share within the tier)", a.weight);
    if (weight === null) return;
    const mc = prompt("Max concurrency (empty = unlimited)", a.max_concurrency || "");
    if (mc === null) return;
    const tags = prompt("Tags (comma-separated)", (a.tags || []).join(", "));
    if (tags === null) return;
    await act("Edit " + a.name, "PATCH", "/admin/accounts/" + a.id, {
      name: name.trim(), priority: Number(priority), weight: Number(weight),
      max_concurrency: mc.trim() === "" ? null : Number(mc),
      tags: tags.split(",").map((t) => t.trim()).filter(Boolean),
    });
  }
  async function accounts() {
    const data = await api("GET", "/admin/accounts");
    const list = data.accounts;
    return h("div", {},
      h("h2", {}, "Accounts"),
      h("div", { class: "card" }, table(
        ["Account", "State", "Windows (5h / 7d / per model)", { label: "In flight", cls: "num" }, { label: "Priority · weight", cls: "num opt" }, { label: "Usage", cls: "num opt" }, "Actions"],
        list.map(accountRow), "No accounts yet.")),
      h("div", { class: "card" }, h("h3", {}, "Add an API key"), addKeyForm()),
      h("div", { class: "card" }, h("h3", {}, "Log in with a Claude account (OAuth)"), oauthForm()),
      h("div", { class: "card" }, h("h3", {}, "Import credential files"), importForm()));
  }
  function addKeyForm() {
    const f = h("form", { class: "inline", id: "add-key" },
      h("label", {}, "Name", h("input", { name: "name", required: true })),
      h("label", {}, "API key", h("input", { name: "key", type: "password", required: true, autocomplete: "off" })),
      h("label", {}, "Priority", h("input", { name: "priority", type: "number", value: "0" })),
      h("label", {}, "Weight", h("input", { name: "weight", type: "number", value: "1", min: "1" })),
      h("button", { type: "submit" }, "Add"));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: f.elements.name.value.trim(), key: f.elements.key.value.trim(), priority: Number(f.elements.priority.value), weight: Number(f.elements.weight.value) };
      f.elements.key.value = "";
      if (await act("Add " + body.name, "POST", "/admin/accounts", body)) f.reset();
    });
    return f;
  }
  function oauthForm() {
    const out = h("div", {});
    const f = h("form", { class: "inline", id: "oauth-start" },
      h("label", {}, "Name (optional)", h("input", { name: "name" })),
      h("button", { type: "submit" }, "Start login"));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = f.elements.name.value.trim();
      let r;
      try { r = await api("POST", "/admin/oauth/start", name ? { name } : {}); } catch (e) { flash("Login: " + e.message, true); return; }
      const code = h("input", { name: "code", placeholder: "CODE#STATE or the callback URL", required: true, size: "40" });
      const done = h("form", { class: "inline", id: "oauth-complete" },
        h("label", {}, "Paste the code", code), h("button", { type: "submit" }, "Complete login"));
      done.addEventListener("submit", async (e2) => {
        e2.preventDefault();
        const res = await act("Login", "POST", "/admin/oauth/complete", { code: code.value.trim() });
        if (res) out.replaceChildren(h("p", {}, "Signed in as ", h("strong", {}, res.account.name), " (" + res.saved + ")."));
      });
      out.replaceChildren(
        h("p", {}, "1. Open ", h("a", { href: r.authorize_url, target: "_blank", rel: "noopener noreferrer", id: "authorize-url" }, "the authorize page"), " and approve."),
        h("p", {}, "2. Paste the code it shows (or the address the browser was sent to) here within 15 minutes:"), done);
    });
    return h("div", {}, f, out);
  }
  function importForm() {
    const area = h("textarea", { name: "files", placeholder: "Paste the contents of .credentials.json or claude-*.json (one file, or a JSON array of files)" });
    const f = h("form", {}, area, h("p", {}, h("button", { type: "submit" }, "Import")));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let parsed;
      try { parsed = JSON.parse(area.value); } catch (e) { flash("Import: not JSON: " + e.message, true); return; }
      area.value = "";
      const r = await act("Import", "POST", "/admin/accounts/import", { files: Array.isArray(parsed) ? parsed : [parsed] });
      if (r) flash("Import: " + r.results.map((x) => (x.error ? "error: " + x.error : x.saved + " " + x.account.name)).join("; "));
    });
    return f;
  }

  // === keys ===
  async function keys() {
    let data;
    try { data = await api("GET", "/admin/keys"); } catch (e) {
      if (e.status === 404) return h("div", {}, h("h2", {}, "Keys"), h("p", { class: "muted" }, "This gateway has no managed client keys."));
      throw e;
    }
    const usageRows = await api("GET", "/admin/usage?group_by=key&from=" + encodeURIComponent(monthStart().toISOString())).catch(() => ({ rows: [] }));
    const byKey = {};
    for (const r of usageRows.rows) byKey[r.key] = r;
    const rows = data.keys.map((k) => {
      const u = byKey[k.name] || {};
      const l = k.limits || {};
      const limits = [l.rpm ? l.rpm + " rpm" : null, l.concurrency ? l.concurrency + " concurrent" : null, l.tokens_per_day ? num(l.tokens_per_day) + " tokens/day" : null, l.usd_per_month ? usd(l.usd_per_month) + "/month" : null, l.models && l.models.length ? "models " + l.models.join(",") : null, l.accounts && l.accounts.length ? "accounts " + l.accounts.join(",") : null].filter(Boolean);
      const spend = l.usd_per_month ? h("div", {}, budgetBar((u.cost_usd || 0) / l.usd_per_month), usd(u.cost_usd || 0) + " of " + usd(l.usd_per_month) + " this month") : h("div", { class: "muted" }, usd(u.cost_usd || 0) + " this month");
      return h("tr", { "data-key": k.name },
        h("td", {}, h("strong", {}, k.name), h("div", { class: "muted" }, k.prefix + "…"), k.note ? h("div", { class: "muted" }, k.note) : null),
        h("td", {}, stateBadge(k.state)),
        h("td", {}, limits.length ? limits.join(" · ") : h("span", { class: "muted" }, "no limits")),
        h("td", {}, spend, h("div", { class: "muted" }, num(u.requests || 0) + " requests · " + num(tokensOf(u)) + " tokens")),
        h("td", { class: "opt" }, k.last_used_at ? when(k.last_used_at) : "never"),
        h("td", {}, h("div", { class: "actions" },
          h("button", { class: "small secondary", onclick: () => act((k.enabled ? "Disable " : "Enable ") + k.name, "PATCH", "/admin/keys/" + k.id, { enabled: !k.enabled }) }, k.enabled ? "Disable" : "Enable"),
          h("button", { class: "small secondary", onclick: () => editLimits(k) }, "Limits"),
          h("button", { class: "small danger", onclick: () => act("Revoke " + k.name, "DELETE", "/admin/keys/" + k.id, undefined, "Revoke " + k.name + "? Clients using it are refused from now on.") }, "Revoke"))));
    });
    return h("div", {},
      h("h2", {}, "Client keys"),
      h("div", { class: "card" }, table(["Key", "State", "Limits", "Usage (this month)", { label: "Last used", cls: "opt" }, "Actions"], rows, "No managed keys yet.")),
      h("div", { class: "card" }, h("h3", {}, "Create a key"), createKeyForm()));
  }
  async function editLimits(k) {
    const l = k.limits || {};
    const body = {};
    for (const [field, label] of [["rpm", "Requests per minute"], ["concurrency", "Concurrent requests"], ["tokens_per_day", "Tokens per day (UTC)"], ["usd_per_month", "USD per month"]]) {
      const v = prompt(label + " for " + k.name + " (empty = no limit)", l[field] === null || l[field] === undefined ? "" : l[field]);
      if (v === null) return;
      body[field] = v.trim() === "" ? null : Number(v);
    }
    await act("Limits of " + k.name, "PATCH", "/admin/keys/" + k.id, { limits: body });
  }
  function budgetBar(x) {
    const b = h("div", { class: "bar" + (x >= 1 ? " full" : x >= 0.8 ? " high" : "") }, h("span"));
    b.firstChild.style.width = (Math.min(1, x) * 100).toFixed(1) + "%";
    return b;
  }
  function monthStart() { const d = new Date(); d.setUTCDate(1); d.setUTCHours(0, 0, 0, 0); return d; }
  function createKeyForm() {
    const out = h("div", { id: "new-key" });
    const f = h("form", { class: "inline", id: "create-key" },
      h("label", {}, "Name", h("input", { name: "name", required: true })),
      h("label", {}, "Requests / min", h("input", { name: "rpm", type: "number", min: "0" })),
      h("label", {}, "Concurrency", h("input", { name: "concurrency", type: "number", min: "0" })),
      h("label", {}, "Tokens / day", h("input", { name: "tokens_per_day", type: "number", min: "0" })),
      h("label", {}, "USD / month", h("input", { name: "usd_per_month", type: "number", min: "0", step: "0.01" })),
      h("label", {}, "Models (globs, comma-separated)", h("input", { name: "models" })),
      h("button", { type: "submit" }, "Create"));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: f.elements.name.value.trim() };
      for (const k of ["rpm", "concurrency", "tokens_per_day", "usd_per_month"]) if (f.elements[k].value !== "") body[k] = Number(f.elements[k].value);
      const models = f.elements.models.value.split(",").map((x) => x.trim()).filter(Boolean);
      if (models.length) body.models = models;
      let r;
      try { r = await api("POST", "/admin/keys", body); } catch (e) { flash("Create key: " + e.message, true); return; }
      f.reset();
      const secret = h("div", { class: "secret", id: "new-key-secret" }, r.key);
      const copy = h("button", { class: "small", type: "button", onclick: async () => {
        try { await navigator.clipboard.writeText(r.key); copy.textContent = "Copied"; } catch (_) { copy.textContent = "Select and copy by hand"; }
      } }, "Copy");
      out.replaceChildren(h("p", {}, "Key ", h("strong", {}, r.name), " — shown once, copy it now:"), secret, h("p", {}, copy, " ",
        h("button", { class: "small secondary", type: "button", onclick: () => out.replaceChildren() }, "I have copied it")));
      refreshKeysTableOnly();
    });
    return h("div", {}, f, out);
  }
  // Redraws the keys table but keeps a freshly shown key on screen until the operator dismisses it.
  async function refreshKeysTableOnly() {
    const kept = $("new-key");
    const node = await keys();
    const fresh = node.querySelector("#new-key");
    if (kept && fresh) fresh.replaceWith(kept);
    $("main").replaceChildren(node);
  }

  // === usage ===
  const usageState = { group: "model", bucket: "hour", days: 1 };
  async function usage() {
    const to = new Date();
    const from = new Date(to.getTime() - usageState.days * 86400000);
    let data;
    try {
      data = await api("GET", "/admin/usage?group_by=" + usageState.group + "&bucket=" + usageState.bucket + "&from=" + encodeURIComponent(from.toISOString()) + "&to=" + encodeURIComponent(new Date(to.getTime() + 3600000).toISOString()));
    } catch (e) {
      if (e.status === 404 || e.status === 503) return h("div", {}, h("h2", {}, "Usage"), h("p", { class: "muted" }, "This gateway keeps no usage records."));
      throw e;
    }
    const rows = data.rows;
    const names = [...new Set(rows.map((r) => r[usageState.group]))].slice(0, 8);
    const buckets = [...new Set(rows.map((r) => r.bucket))].sort();
    const series = buckets.map((b) => ({
      label: new Date(b).toLocaleString([], usageState.bucket === "hour" ? { hour: "2-digit", minute: "2-digit" } : { month: "short", day: "numeric" }),
      parts: names.map((n) => rows.filter((r) => r.bucket === b && r[usageState.group] === n).reduce((a, r) => a + tokensOf(r), 0)),
    }));
    const totals = names.map((n) => rows.filter((r) => r[usageState.group] === n).reduce((a, r) => ({ requests: a.requests + r.requests, tokens: a.tokens + tokensOf(r), cost: a.cost + (r.cost_usd || 0) }), { requests: 0, tokens: 0, cost: 0 }));
    const pick = (label, key, options) => h("label", {}, label, h("select", { name: key, onchange: (ev) => { usageState[key] = key === "days" ? Number(ev.target.value) : ev.target.value; ev.target.blur(); refresh(); } },
      options.map(([v, t]) => h("option", { value: v, selected: String(usageState[key]) === String(v) }, t))));
    return h("div", {},
      h("h2", {}, "Usage"),
      h("form", { class: "inline card" },
        pick("By", "group", [["model", "model"], ["key", "key"], ["account", "account"]]),
        pick("Per", "bucket", [["hour", "hour"], ["day", "day"]]),
        pick("Range", "days", [[1, "last 24 hours"], [7, "last 7 days"], [30, "last 30 days"]])),
      h("div", { class: "card", id: "usage-chart" }, h("h3", {}, "Tokens per " + usageState.bucket + " by " + usageState.group),
        series.length ? barChart(series, names, names.map((_, i) => "c" + i)) : h("p", { class: "muted" }, "No usage in this range yet.")),
      h("div", { class: "card" }, table([usageState.group, { label: "Requests", cls: "num" }, { label: "Tokens", cls: "num" }, { label: "Cost", cls: "num" }],
        names.map((n, i) => h("tr", {}, h("td", {}, h("span", { class: "legend" }, h("i", { class: "c" + i }), n)), h("td", { class: "num" }, num(totals[i].requests)), h("td", { class: "num" }, num(totals[i].tokens)), h("td", { class: "num" }, usd(totals[i].cost)))))));
  }
  // A stacked bar chart as SVG: one bar per point, one segment per series.
  function barChart(points, names, classes) {
    const W = 720, H = 180, P = 24;
    const max = Math.max(1, ...points.map((p) => p.parts.reduce((a, b) => a + b, 0)));
    const bw = Math.min(40, Math.max(2, (W - P) / Math.max(points.length, 1) - 2));
    const svg = s("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
    svg.append(s("line", { x1: P, y1: H - P, x2: W, y2: H - P, class: "axis" }), s("text", { x: 0, y: 10 }, num(max)));
    points.forEach((p, i) => {
      let y = H - P;
      const x = P + i * (bw + 2);
      p.parts.forEach((v, j) => {
        const hgt = (v / max) * (H - P - 14);
        if (hgt > 0) { y -= hgt; svg.append(s("rect", { x, y, width: bw, height: hgt, class: classes[j] }, s("title", {}, p.label + " · " + names[j] + ": " + num(v)))); }
      });
      if (points.length <= 12 || i % Math.ceil(points.length / 8) === 0) svg.append(s("text", { x, y: H - 8 }, p.label));
    });
    return h("div", {}, svg, h("div", { class: "legend" }, names.map((n, j) => h("span", {}, h("i", { class: classes[j] }), n))));
  }

  // === requests ===
  const filters = { key: "", account: "", status: "", model: "" };
  async function requests() {
    const q = new URLSearchParams({ limit: "200" });
    for (const k of ["key", "account", "status"]) if (filters[k]) q.set(k, filters[k]);
    let data;
    try { data = await api("GET", "/admin/requests?" + q); } catch (e) {
      if (e.status === 404 || e.status === 503) return h("div", {}, h("h2", {}, "Requests"), h("p", { class: "muted" }, "This gateway keeps no request log."));
      throw e;
    }
    const list = data.requests.filter((r) => !filters.model || r.model.includes(filters.model));
    const input = (k, label) => h("label", {}, label, h("input", { name: k, value: filters[k], onchange: (ev) => { filters[k] = ev.target.value.trim(); ev.target.blur(); refresh(); } }));
    return h("div", {},
      h("h2", {}, "Requests"),
      h("form", { class: "inline card", onsubmit: (ev) => ev.preventDefault() }, input("key", "Key"), input("account", "Account"), input("status", "Status"), input("model", "Model")),
      h("div", { class: "card", id: "request-log" }, table(["When", "Key", "Account", "Model", { label: "Status", cls: "num" }, { label: "Tokens in / out", cls: "num" }, { label: "Latency", cls: "num opt" }, { label: "Cost", cls: "num opt" }],
        list.map((r) => h("tr", {}, h("td", {}, new Date(r.at).toLocaleTimeString()), h("td", {}, r.key), h("td", {}, r.account || "–"), h("td", {}, r.model),
          h("td", { class: "num" }, r.status, r.error_type ? h("div", { class: "muted" }, r.error_type) : null),
          h("td", { class: "num" }, num(r.input_tokens) + " / " + num(r.output_tokens)), h("td", { class: "num opt" }, ms(r.latency_ms)), h("td", { class: "num opt" }, usd(r.cost_usd)))), "No requests yet.")));
  }

  // === audit and cluster ===
  async function audit() {
    const data = await api("GET", "/admin/audit?limit=200");
    return h("div", {}, h("h2", {}, "Audit log"), h("div", { class: "card" }, table(["When", "Who", "What", "On", { label: "Status", cls: "num" }, "Detail"],
      data.entries.map((e) => h("tr", {}, h("td", {}, new Date(e.at).toLocaleString()), h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, e.target || "–"), h("td", { class: "num" }, e.status), h("td", { class: "reason" }, e.detail || ""))), "No admin actions yet.")));
  }
  async function cluster() {
    const [c, config] = await Promise.all([api("GET", "/admin/cluster"), api("GET", "/admin/config")]);
    return h("div", {}, h("h2", {}, "Cluster"),
      h("div", { class: "grid" }, tile("Replicas alive", c.alive), tile("Store", c.store.state)),
      h("div", { class: "card" }, table(["Replica", "Version", "Started", "Last seen", "Accounts", "In flight"],
        c.replicas.map((r) => h("tr", {}, h("td", {}, r.id, r.this ? " (this one)" : "", " ", stateBadge(r.alive ? "ready" : "disabled")), h("td", {}, r.version), h("td", {}, when(r.started_at)), h("td", {}, when(r.seen_at)), h("td", { class: "num" }, r.detail.accounts), h("td", { class: "num" }, r.detail.in_flight))))),
      h("div", { class: "card" }, h("h3", {}, "Effective configuration (secrets redacted)"), h("pre", { class: "table-wrap" }, JSON.stringify(config, null, 2))));
  }

  // === start ===
  function start() {
    $("login").hidden = true;
    $("app").hidden = false;
    route();
    startPolling();
  }
  async function boot() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    window.addEventListener("hashchange", route);
    try {
      const who = await api("GET", "/admin/session");
      if (who.csrf_token) { csrf = who.csrf_token; start(); return; }
    } catch (_) { /* not logged in */ }
    showLogin();
  }
  document.addEventListener("DOMContentLoaded", boot);
})();
