// retryguard dashboard: the live parts only. Every page works without this file, apart
// from live progress; nothing here builds HTML from data (textContent only).
"use strict";
document.documentElement.classList.add("js");

// Times: the title shows the local time beside the UTC one.
function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) t.title = d.toLocaleString() + " (local time)";
  }
}

// Confirmations that name what will happen, and force/delete without a reason.
function guardForms() {
  for (const form of document.querySelectorAll("form")) {
    form.addEventListener("submit", (ev) => {
      const force = form.querySelector("input[data-needs-reason]");
      const action = form.querySelector("input[name=action]:checked");
      const reason = form.querySelector("input[name=reason]");
      const needsReason = (force && force.checked) || (action && action.value === "delete" && form.action.endsWith("/run"));
      if (needsReason && reason && !reason.value.trim()) {
        ev.preventDefault();
        reason.setCustomValidity("A reason is required to force or delete.");
        reason.reportValidity();
        reason.addEventListener("input", () => reason.setCustomValidity(""), { once: true });
        return;
      }
      const message = form.dataset.confirm;
      if (message && !window.confirm(message)) ev.preventDefault();
    });
  }
}

// An operation's progress, polled about once a second until it ends.
function followOperation() {
  const box = document.getElementById("operation");
  if (!box || box.dataset.running !== "true") return;
  const url = box.dataset.statusUrl;
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  let failures = 0;
  async function poll() {
    let op;
    try {
      const r = await fetch(url, { headers: { accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error("status " + r.status);
      op = await r.json();
      failures = 0;
    } catch (e) {
      failures += 1;
      set("op-state", "running (cannot reach the server: " + e.message + ")");
      if (failures < 30) setTimeout(poll, 2000);
      return;
    }
    const state = document.getElementById("op-state");
    state.textContent = op.state;
    state.className = "state-" + op.state;
    set("op-processed", String(op.processed));
    set("op-total", String(op.total));
    const bar = document.getElementById("op-progress");
    if (bar) { bar.max = Math.max(op.total, 1); bar.value = op.state === "running" ? op.processed : bar.max; }
    const body = document.getElementById("op-counts");
    if (body) {
      const rows = Object.entries(op.counts).filter(([, n]) => n > 0);
      body.replaceChildren(...rows.map(([k, n]) => {
        const tr = document.createElement("tr");
        const a = document.createElement("td"); a.textContent = k;
        const b = document.createElement("td"); b.className = "num"; b.textContent = String(n);
        tr.append(a, b);
        return tr;
      }));
    }
    if (op.error && op.error.error) {
      let p = document.getElementById("op-error");
      if (!p) { p = document.createElement("p"); p.id = "op-error"; p.className = "error"; box.append(p); }
      p.textContent = op.error.error.message;
    }
    if (op.state === "running") setTimeout(poll, 1000);
    else box.dataset.running = "false";
  }
  setTimeout(poll, 500);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  guardForms();
  followOperation();
});
