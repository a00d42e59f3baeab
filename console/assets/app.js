// zmesh console: the one script, embedded in the binary. Every change goes through the
// REST API (/api/v1/...) with the session cookie and the page's CSRF token; the pages
// themselves only read. No framework, no CDN.
"use strict";
// The network the page shows (?network=NAME); kept in links and sent with every call
// (API calls, the live-update stream). Shared by the three parts below.
const network = new URLSearchParams(location.search).get("network");
function withNetwork(url) {
  if (!network || !url.startsWith("/") || /[?&]network=/.test(url)) return url;
  return url + (url.includes("?") ? "&" : "?") + "network=" + encodeURIComponent(network);
}

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  async function api(method, url, body, asText) {
    url = withNetwork(url);
    const headers = { "X-CSRF-Token": csrf };
    let payload;
    if (body !== undefined) {
      headers["Content-Type"] = asText ? "text/plain; charset=utf-8" : "application/json";
      payload = asText ? body : JSON.stringify(body);
    }
    const r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    let data = null;
    const text = await r.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
    return { ok: r.ok, status: r.status, data };
  }

  function message(res) {
    const e = res.data && res.data.error;
    if (e) return (e.field ? e.field + ": " : "") + e.message;
    return "request failed (HTTP " + res.status + ")";
  }

  // A duration as the CLI takes it: "90" or "90s", "15m", "24h", "30d", "2w" -> seconds;
  // null when it is none of those (the raw text is then sent, and the API names the field).
  function seconds(text) {
    const m = /^\s*(\d+)\s*([smhdw]?)\s*$/i.exec(text);
    if (!m) return null;
    const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2].toLowerCase()];
    return parseInt(m[1], 10) * unit;
  }

  function collect(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.name === "csrf") continue;
      const t = el.dataset.type || "text";
      const optional = el.hasAttribute("data-optional");
      let v;
      if (t === "bool") v = el.checked;
      else if (t === "list") v = el.value.split(/[\s,]+/).filter(Boolean);
      else if (t === "int") {
        if (el.value.trim() === "") { if (optional) continue; v = null; }
        else v = parseInt(el.value, 10);
      } else if (t === "duration") {
        if (el.value.trim() === "") { if (optional) continue; v = null; }
        else { const s = seconds(el.value); v = s === null ? el.value : s; }
      } else if (t === "datetime") v = el.value ? Date.parse(el.value + ":00Z") : null;
      else {
        if (el.value === "" && optional) continue;
        v = el.value;
      }
      out[el.name] = v;
    }
    return out;
  }

  // ---- how far a change reached the agents ----
  // Before a change the network revision is noted; after the page reloads, the change
  // published after it is followed (GET /api/v1/changes/{revision}) and its line shown
  // at the top: "applied by N of M connected peers (p50 …)", until final or 15 s.
  const PENDING = "zmesh-change-after";
  async function noteRevision() {
    const r = await api("GET", "/api/v1/changes");
    if (r.ok && r.data) sessionStorage.setItem(PENDING, String(r.data.revision));
  }
  async function followChange() {
    const after = sessionStorage.getItem(PENDING);
    if (after === null) return;
    sessionStorage.removeItem(PENDING);
    const now = await api("GET", "/api/v1/changes");
    if (!now.ok || String(now.data.revision) === after) return;
    const main = document.querySelector("main");
    if (!main) return;
    const box = document.createElement("p");
    box.id = "change-status";
    box.className = "muted";
    box.textContent = "Sending the change to the devices…";
    main.insertBefore(box, main.children[1] || null);
    const url = "/api/v1/changes/" + (Number(after) + 1);
    for (let i = 0; i < 75; i++) {
      const r = await api("GET", url);
      if (r.ok) {
        const rev = r.data;
        const offline = rev.pending.filter((p) => !p.connected).length;
        box.textContent = "Change (revision " + rev.revision + "): " + rev.summary + (rev.finished ? "" : " … waiting");
        if (rev.finished) {
          const silent = rev.pending.filter((p) => p.connected).map((p) => p.name);
          if (silent.length) box.textContent += ". Not applied by: " + silent.join(", ");
          if (offline) box.textContent += ". Offline devices apply it when they come back.";
          return;
        }
      }
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  followChange();

  function errorBox(scope) {
    return (scope && scope.querySelector(".form-error")) || document.getElementById("flash");
  }

  function done(spec, res, scope) {
    spec = spec || "reload";
    if (spec === "reload") { location.reload(); return; }
    if (spec.startsWith("redirect:")) { location.href = spec.slice(9); return; }
    const [kind, sel] = [spec.split(":")[0], spec.slice(spec.indexOf(":") + 1)];
    const target = document.querySelector(sel);
    if (kind === "show" && target) {
      // a new enrollment key: the command to run on the device
      const cmd = "zmesh up --console " + target.dataset.console + " --enroll-key " + res.data.key;
      target.querySelector("#up-command").textContent = cmd;
      target.classList.remove("hidden");
      target.dataset.keyId = res.data.id;
    } else if (kind === "token" && target) {
      target.querySelector("pre").textContent = res.data.token;
      target.classList.remove("hidden");
    } else if (kind === "check" && target) {
      const d = res.data;
      target.className = d.allowed ? "allowed" : "denied";
      target.textContent = d.allowed
        ? "Allowed by rule " + (d.rule.index + 1) + " (line " + d.rule.line + ") of policy version " + d.policy_version
        : "Denied: no rule of policy version " + d.policy_version + " allows it";
    }
  }

  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    if (!form.dataset || !form.dataset.api) return;
    ev.preventDefault();
    const box = errorBox(form);
    if (box) box.textContent = "";
    const btn = form.querySelector("button[type=submit]");
    if (btn) btn.disabled = true;
    try {
      // `{field}` in data-api takes that field's value out of the body into the path
      const body = collect(form);
      const url = form.dataset.api.replace(/\{(\w+)\}/g, (_, k) => {
        const v = body[k];
        delete body[k];
        return encodeURIComponent(v == null ? "" : String(v));
      });
      if (!form.dataset.done) await noteRevision();
      const res = await api(form.dataset.method || "POST", url, body);
      if (res.ok) done(form.dataset.done, res, form);
      else if (box) box.textContent = message(res);
    } finally { if (btn) btn.disabled = false; }
  });

  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    if (b.dataset.copy) {
      const el = document.querySelector(b.dataset.copy);
      try { await navigator.clipboard.writeText(el.textContent); b.textContent = "Copied"; }
      catch (e) { const r = document.createRange(); r.selectNodeContents(el); getSelection().removeAllRanges(); getSelection().addRange(r); }
      return;
    }
    if (!b.dataset.api || b.type === "submit") return;
    if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
    const body = b.dataset.body ? JSON.parse(b.dataset.body) : undefined;
    b.disabled = true;
    await noteRevision();
    const res = await api(b.dataset.method || "POST", b.dataset.api, body);
    b.disabled = false;
    if (res.ok) done(b.dataset.done, res, null);
    else { const box = errorBox(b.closest("form, .card, td")); if (box) box.textContent = message(res); }
  });

  // ---- policy editor: validate as you type, show the reachability diff, apply ----
  const text = document.getElementById("policy-text");
  if (!text) return;
  const gutter = document.getElementById("policy-gutter");
  const status = document.getElementById("policy-status");
  const errors = document.getElementById("policy-errors");
  const diff = document.getElementById("policy-diff");
  const diffSummary = document.getElementById("policy-diff-summary");
  const apply = document.getElementById("policy-apply");
  const rulesDiff = document.getElementById("policy-rules-diff");
  const original = text.value;
  let bad = new Set();
  let timer = null;
  let seq = 0;

  function drawGutter() {
    const n = text.value.split("\n").length;
    let html = "";
    for (let i = 1; i <= n; i++) html += '<span id="line-' + i + '"' + (bad.has(i) ? ' class="bad"' : "") + ">" + i + "</span>";
    gutter.innerHTML = html;
    gutter.scrollTop = text.scrollTop;
  }
  function setStatus(s, cls) { status.textContent = s; status.className = cls || "muted"; }
  function li(t, cls) { const e = document.createElement("li"); e.textContent = t; if (cls) e.className = cls; return e; }
  function ruleText(r) {
    return r.src.join(", ") + " → " + r.dst.join(", ") + " " + (r.proto || "any");
  }
  function showRuleChanges(added, removed) {
    for (const r of added) rulesDiff.appendChild(li("+ rule" + (r.description ? " “" + r.description + "”" : "") + ": " + ruleText(r), "add"));
    for (const r of removed) rulesDiff.appendChild(li("− rule" + (r.description ? " “" + r.description + "”" : "") + ": " + ruleText(r), "del"));
  }

  async function validate() {
    const mine = ++seq;
    if (text.value === original) {
      bad = new Set(); errors.replaceChildren(); diff.replaceChildren(); rulesDiff.replaceChildren();
      diffSummary.textContent = "edit the policy to see what changes";
      setStatus("unchanged"); if (apply) apply.disabled = true; drawGutter(); return;
    }
    setStatus("checking…");
    const res = await api("POST", "/api/v1/policy/diff", text.value, true);
    if (mine !== seq) return; // a newer edit is on its way
    errors.replaceChildren(); diff.replaceChildren(); rulesDiff.replaceChildren(); bad = new Set();
    if (res.status === 422 && res.data && res.data.errors) {
      for (const e of res.data.errors) {
        if (e.line) bad.add(e.line);
        errors.appendChild(li((e.line ? "Line " + e.line + ", column " + e.column + ": " : "") + e.message));
      }
      setStatus(res.data.errors.length + " problem" + (res.data.errors.length === 1 ? "" : "s"), "bad");
      diffSummary.textContent = "fix the errors to see the reachability diff";
      if (apply) apply.disabled = true;
    } else if (res.ok) {
      setStatus("valid", "ok");
      diffSummary.textContent = res.data.summary || (res.data.changes.length + " changes");
      showRuleChanges(res.data.rules_added || [], res.data.rules_removed || []);
      for (const c of res.data.changes) {
        const ports = (c.ports || []).join(",");
        diff.appendChild(li((c.added ? "+ " : "− ") + c.src_name + " → " + c.dst_name + " " + c.proto + (ports ? ":" + ports : ""), c.added ? "add" : "del"));
      }
      if (!res.data.changes.length) diff.appendChild(li("no change in who can reach what"));
      if (apply) apply.disabled = false;
    } else {
      setStatus(message(res), "bad");
      if (apply) apply.disabled = true;
    }
    drawGutter();
  }

  text.addEventListener("input", () => { drawGutter(); clearTimeout(timer); timer = setTimeout(validate, 300); });
  text.addEventListener("scroll", () => { gutter.scrollTop = text.scrollTop; });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Tab" && !text.readOnly) { e.preventDefault(); document.execCommand("insertText", false, "  "); }
  });
  if (apply) apply.addEventListener("click", async () => {
    apply.disabled = true;
    await noteRevision();
    const res = await api("PUT", "/api/v1/policy", text.value, true);
    if (res.ok) { location.reload(); return; }
    document.getElementById("flash").textContent = message(res);
    if (res.data && res.data.errors) validate();
  });
  drawGutter();

  // ---- visual editor: the same draft as cards and tables. Every change is a
  // structured edit the console splices into the text (POST /api/v1/policy/edit,
  // comments and order kept); the new text then goes through validate() above, so the
  // diff, the errors and "Apply" are the JSON editor's. ----
  const visual = document.getElementById("policy-visual");
  const jsonView = document.getElementById("policy-json");
  const canEdit = document.getElementById("policy-editor").dataset.admin === "true";
  const vErr = document.getElementById("visual-error");
  let outline = null;
  let editing = null; // the index of the rule in the form; null: a new rule
  const form = { src: [], dst: [] };

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function chip(label, onRemove) {
    const c = el("span", { class: "chip" }, label);
    if (onRemove && canEdit) c.append(el("button", { type: "button", class: "x", title: "remove " + label, onclick: onRemove }, "×"));
    return c;
  }
  function reason(res) {
    let why = message(res);
    if (res.data && res.data.errors) {
      why += ": " + res.data.errors.map((e) => (e.line ? "line " + e.line + ": " : "") + e.message).join("; ");
    }
    return why;
  }

  async function edit(edits) {
    vErr.textContent = "";
    const res = await api("POST", "/api/v1/policy/edit", { text: text.value, edits });
    if (!res.ok) { vErr.textContent = "Not changed. " + reason(res); return false; }
    text.value = res.data.text;
    outline = res.data.outline;
    render();
    drawGutter();
    clearTimeout(timer);
    validate();
    return true;
  }

  async function load() {
    const res = await api("POST", "/api/v1/policy/edit", { text: text.value, edits: [] });
    if (res.ok) { outline = res.data.outline; vErr.textContent = ""; }
    else { outline = null; vErr.textContent = "The draft has problems; fix them in the JSON view. " + reason(res); }
    render();
  }

  // "tag:db:5432" -> ["tag:db", "5432"]; a bare IPv6 address is not split.
  function splitPorts(d) {
    const m = /^(.*[^:]):(\*|\d[\d,\-]*)$/.exec(d);
    return m ? [m[1], m[2]] : [d, null];
  }

  function names() {
    const list = document.getElementById("policy-names");
    const opts = Array.from(document.querySelectorAll("#policy-known option")).map((o) => o.value);
    if (outline) {
      for (const g of outline.groups) opts.push(g.name);
      for (const t of outline.tag_owners) opts.push(t.name);
      for (const h of outline.hosts) opts.push(h.name);
    }
    list.replaceChildren(...Array.from(new Set(opts)).map((v) => el("option", { value: v })));
  }

  function ruleCard(r, i) {
    const head = el("div", { class: "rule-head" }, el("b", {}, "Rule " + (i + 1)),
      r.description ? el("span", { class: "desc" }, r.description) : el("span", { class: "muted" }, "no description"),
      el("span", { class: "muted small" }, "line " + r.line));
    if (canEdit) {
      head.append(el("span", { class: "actions" },
        el("button", { type: "button", class: "small", id: "rule-edit-" + i, onclick: () => startEdit(i) }, "Edit"),
        el("button", { type: "button", class: "small danger", id: "rule-remove-" + i, onclick: () => {
          if (confirm("Remove rule " + (i + 1) + " from the draft?")) edit([{ op: "remove_rule", index: i }]);
        } }, "Remove")));
    }
    const dsts = r.dst.map((d) => {
      const [t, p] = splitPorts(d);
      return chip(t + (p && p !== "*" ? " : " + p : ""));
    });
    return el("div", { class: "rule", id: "rule-" + i }, head,
      el("div", { class: "rule-body" },
        el("span", { class: "side-label" }, "who"), el("span", { class: "chips" }, ...r.src.map((s) => chip(s))),
        el("span", { class: "arrow" }, "→"),
        el("span", { class: "side-label" }, "what"), el("span", { class: "chips" }, ...dsts),
        el("span", { class: "badge proto" }, r.proto || "any")));
  }

  // A table of named lists (groups, tags): members as chips, add and remove.
  function listTable(id, items, setOp, removeOp, itemLabel, newLabel) {
    const body = document.querySelector("#" + id + " tbody");
    const rows = items.map((g) => {
      const set = (members) => edit([setList(setOp, g.name, members)]);
      const cell = el("td", {}, el("span", { class: "chips" },
        ...g.items.map((m) => chip(m, () => set(g.items.filter((x) => x !== m))))));
      if (canEdit) {
        const input = el("input", { list: "policy-names", placeholder: itemLabel, class: "add-member" });
        const add = () => { const v = input.value.trim(); if (v) set(g.items.concat(v.split(/\s*,\s*/).filter(Boolean))); };
        input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); add(); } });
        cell.append(el("span", { class: "row inline-add" }, input, el("button", { type: "button", class: "small", onclick: add }, "Add")));
      }
      const actions = canEdit ? el("button", { type: "button", class: "small danger", onclick: () => {
        if (confirm("Remove " + g.name + " from the draft?")) edit([removeOp === "remove_group" ? { op: removeOp, name: g.name } : { op: removeOp, tag: g.name }]);
      } }, "Remove") : "";
      return el("tr", { "data-name": g.name }, el("td", { class: "nowrap" }, g.name), cell, el("td", {}, actions));
    });
    if (canEdit) {
      const name = el("input", { placeholder: newLabel, class: "new-name" });
      const first = el("input", { list: "policy-names", placeholder: itemLabel + " (optional)", class: "new-member" });
      const add = () => {
        const n = name.value.trim();
        if (n) edit([setList(setOp, n, first.value.trim() ? [first.value.trim()] : [])]);
      };
      rows.push(el("tr", { class: "new" }, el("td", {}, name), el("td", {}, first), el("td", {}, el("button", { type: "button", class: "small", onclick: add }, "Add"))));
    }
    body.replaceChildren(...rows);
  }
  // The edits name their subject differently: a group by name with "members", a tag
  // by tag with "owners".
  function setList(op, n, items) {
    return op === "set_group" ? { op, name: n, members: items } : { op, tag: n, owners: items };
  }

  function render() {
    names();
    const rules = document.getElementById("visual-rules");
    if (!outline) { rules.replaceChildren(); return; }
    rules.replaceChildren(...outline.rules.map(ruleCard));
    if (!outline.rules.length) rules.append(el("p", { class: "muted" }, "No rules: nothing is allowed."));
    listTable("visual-groups", outline.groups, "set_group", "remove_group", "user:…, device, tag:…", "group:NAME");
    listTable("visual-tags", outline.tag_owners, "set_tag_owners", "remove_tag", "group:…, user:…", "tag:NAME");
    const hosts = document.querySelector("#visual-hosts tbody");
    const hrows = outline.hosts.map((h) => el("tr", { "data-name": h.name }, el("td", {}, h.name), el("td", { class: "mono" }, h.value),
      el("td", {}, canEdit ? el("button", { type: "button", class: "small danger", onclick: () => edit([{ op: "remove_host", name: h.name }]) }, "Remove") : "")));
    if (canEdit) {
      const n = el("input", { placeholder: "name" }), v = el("input", { placeholder: "100.64.0.9 or 10.1.0.0/24" });
      hrows.push(el("tr", { class: "new" }, el("td", {}, n), el("td", {}, v),
        el("td", {}, el("button", { type: "button", class: "small", onclick: () => edit([{ op: "set_host", name: n.value.trim(), value: v.value.trim() }]) }, "Add"))));
    }
    hosts.replaceChildren(...hrows);
    document.getElementById("visual-tests").textContent = outline.tests
      ? outline.tests + " self-test" + (outline.tests === 1 ? "" : "s") + " (edit them in the JSON view) run on every save." : "";
  }

  // ---- the rule form ----
  function drawChips(side) {
    const box = document.getElementById("rule-" + side);
    box.replaceChildren(...form[side].map((v, i) => chip(v, () => { form[side].splice(i, 1); drawChips(side); })));
  }
  function addChip(side) {
    const input = document.getElementById("rule-" + side + "-input");
    for (const v of input.value.split(/\s*,\s*/)) if (v.trim()) form[side].push(v.trim());
    input.value = "";
    drawChips(side);
  }
  function resetForm() {
    editing = null; form.src = []; form.dst = [];
    drawChips("src"); drawChips("dst");
    document.getElementById("rule-ports").value = "*";
    document.getElementById("rule-proto").value = "any";
    document.getElementById("rule-desc").value = "";
    document.getElementById("rule-form-title").textContent = "Add a rule";
    document.getElementById("rule-save").textContent = "Add rule";
    document.getElementById("rule-cancel").classList.add("hidden");
  }
  function startEdit(i) {
    const r = outline.rules[i];
    editing = i;
    const split = r.dst.map(splitPorts);
    const ports = split.map((s) => s[1] || "*");
    const same = ports.every((p) => p === ports[0]);
    form.src = r.src.slice();
    form.dst = same ? split.map((s) => s[0]) : r.dst.slice();
    drawChips("src"); drawChips("dst");
    document.getElementById("rule-ports").value = same ? ports[0] : "";
    document.getElementById("rule-proto").value = r.proto || "any";
    document.getElementById("rule-desc").value = r.description || "";
    document.getElementById("rule-form-title").textContent = "Edit rule " + (i + 1);
    document.getElementById("rule-save").textContent = "Save rule";
    document.getElementById("rule-cancel").classList.remove("hidden");
    document.getElementById("rule-form").scrollIntoView({ block: "nearest" });
  }
  async function saveRule() {
    for (const side of ["src", "dst"]) if (document.getElementById("rule-" + side + "-input").value.trim()) addChip(side);
    const ports = document.getElementById("rule-ports").value.trim();
    const rule = {
      src: form.src.slice(),
      dst: form.dst.map((d) => (ports && !splitPorts(d)[1] ? d + ":" + ports : d)),
      proto: document.getElementById("rule-proto").value,
    };
    const desc = document.getElementById("rule-desc").value.trim();
    if (desc) rule.description = desc;
    const op = editing === null ? { op: "add_rule", rule } : { op: "replace_rule", index: editing, rule };
    if (await edit([op])) resetForm();
  }
  if (canEdit && document.getElementById("rule-form")) {
    for (const side of ["src", "dst"]) {
      document.getElementById("rule-" + side + "-add").addEventListener("click", () => addChip(side));
      document.getElementById("rule-" + side + "-input").addEventListener("keydown", (e) => {
        if (e.key === "Enter") { e.preventDefault(); addChip(side); }
      });
    }
    document.getElementById("rule-save").addEventListener("click", saveRule);
    document.getElementById("rule-cancel").addEventListener("click", resetForm);
  }

  // ---- one click between the views: both show the one draft ----
  function show(view) {
    visual.classList.toggle("hidden", view !== "visual");
    jsonView.classList.toggle("hidden", view !== "json");
    document.querySelectorAll(".tabs .tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
    if (view === "visual") load(); else drawGutter();
  }
  document.querySelectorAll(".tabs .tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
  load();
})();

// ---- live pages and sortable tables ----
// Tables with class "sortable" sort by the clicked header (again: the other way); a
// cell's data-sort, when present, is what it sorts by. Pages with [data-live] parts
// listen to /ui/events (server-sent events from the console's change bus) and, on a
// change, re-read the page once and swap those parts. No polling.
(function () {
  function key(td) {
    if (!td) return "";
    const v = td.dataset.sort !== undefined ? td.dataset.sort : td.textContent.trim();
    return v;
  }
  function compare(a, b) {
    const na = Number(a), nb = Number(b);
    if (a !== "" && b !== "" && !isNaN(na) && !isNaN(nb)) return na - nb;
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }
  function sortTable(table) {
    const col = table.dataset.sortCol;
    if (col === undefined) return;
    const dir = table.dataset.sortDir === "desc" ? -1 : 1;
    const body = table.tBodies[0];
    if (!body) return;
    const rows = Array.from(body.rows);
    rows.sort((r1, r2) => dir * compare(key(r1.cells[col]), key(r2.cells[col])));
    for (const r of rows) body.appendChild(r);
    table.querySelectorAll("thead th").forEach((th, i) => {
      if (String(i) === col) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }
  document.querySelectorAll("table.sortable thead th").forEach((th) => {
    if (th.classList.contains("nosort")) return;
    th.classList.add("sort");
    th.addEventListener("click", () => {
      const table = th.closest("table");
      const col = String(th.cellIndex);
      table.dataset.sortDir = table.dataset.sortCol === col && table.dataset.sortDir !== "desc" ? "desc" : "asc";
      table.dataset.sortCol = col;
      sortTable(table);
    });
  });

  const live = document.querySelectorAll("[data-live][id]");
  if (!live.length || !window.EventSource) return;
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!r.ok || r.redirected) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      for (const el of document.querySelectorAll("[data-live][id]")) {
        const fresh = doc.getElementById(el.id);
        if (fresh) el.innerHTML = fresh.innerHTML;
      }
      document.querySelectorAll("table.sortable").forEach(sortTable);
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
    } catch (e) {
      // the next change tries again
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  const es = new EventSource(withNetwork("/ui/events"));
  let opened = false;
  es.addEventListener("open", () => {
    document.body.dataset.live = "on";
    // after a reconnect, changes may have been missed
    if (opened) refresh();
    opened = true;
  });
  es.addEventListener("error", () => { document.body.dataset.live = "off"; });
  es.addEventListener("change", refresh);
})();

// ---- network picker and links ----
// Console-wide accounts get a picker that lists the networks and reloads the page with
// ?network=NAME; links to other pages keep the network.
(function () {
  if (network) {
    for (const a of document.querySelectorAll('a[href^="/ui/"]')) {
      a.setAttribute("href", withNetwork(a.getAttribute("href")));
    }
  }
  const sel = document.getElementById("network-picker");
  if (!sel) return;
  fetch("/api/v1/networks", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((data) => {
      if (!data) return;
      const nets = data.networks || [];
      const current = network || "default";
      for (const n of nets) {
        const o = document.createElement("option");
        o.value = n.name;
        o.textContent = n.name;
        if (n.name === current) o.selected = true;
        sel.appendChild(o);
      }
      sel.hidden = nets.length < 2 && !network;
      sel.addEventListener("change", function () {
        const q = new URLSearchParams(location.search);
        q.set("network", sel.value);
        location.search = q.toString();
      });
    })
    .catch(() => {});
})();
