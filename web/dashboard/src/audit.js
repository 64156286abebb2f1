// The Audit view: GET /api/audit (docs/operations.md "Audit trail"),
// oldest first, filtered by principal and action, a page at a time:
// "Load more" asks for the entries after the last one shown (the API's
// next), which also shows those recorded since.
import { api } from "./api.js";
import { auditPageSize } from "./cast.js";
import { h } from "./dom.js";

export class AuditView {
  constructor(root) {
    this.root = root;
    this.next = 0;
    this.loaded = false;
    this.page = auditPageSize(location.search);
    this.principalEl = h("input", { id: "audit-principal", placeholder: "principal (token name)", "aria-label": "principal" });
    this.actionEl = h("select", { id: "audit-action", "aria-label": "action" },
      h("option", { value: "" }, "any action"),
      ...["ticket", "rpc", "attach", "process.start", "process.signal", "process.kill", "process.remove", "process.list", "http"]
        .map((a) => h("option", { value: a }, a)));
    this.body = h("tbody");
    this.statusEl = h("span", { class: "audit-status muted" });
    this.moreButton = h("button", { id: "audit-more", type: "button", onclick: () => this.load() }, "Load more");
    root.replaceChildren(
      h("form", { class: "audit-filter", onsubmit: (ev) => { ev.preventDefault(); this.reset(); } },
        this.principalEl, this.actionEl, h("button", { type: "submit" }, "Filter")),
      h("table", { class: "audit" },
        h("thead", {}, h("tr", {}, ...["Seq", "Time", "Principal", "Remote", "Action", "Machine", "Process", "Argv / detail"].map((t) => h("th", {}, t)))),
        this.body),
      h("div", { class: "audit-foot" }, this.moreButton, this.statusEl));
  }

  // show loads the first page the first time the view is shown.
  show() {
    if (!this.loaded) this.reset();
  }

  reset() {
    this.loaded = true;
    this.next = 0;
    this.body.replaceChildren();
    this.load();
  }

  async load() {
    const q = new URLSearchParams({ after: String(this.next), limit: String(this.page) });
    if (this.principalEl.value.trim()) q.set("principal", this.principalEl.value.trim());
    if (this.actionEl.value) q.set("action", this.actionEl.value);
    this.moreButton.disabled = true;
    this.statusEl.textContent = "loading…";
    try {
      const page = await api("/api/audit?" + q);
      const entries = page.entries || [];
      for (const e of entries) this.body.append(row(e));
      if (page.next) this.next = page.next;
      const n = this.body.children.length;
      this.statusEl.textContent = `${n} entr${n === 1 ? "y" : "ies"}` + (entries.length < this.page ? ", no more for now" : "");
      this.root.dataset.state = "loaded";
    } catch (e) {
      this.statusEl.textContent = String(e.message || e);
      this.root.dataset.state = "error";
    } finally {
      this.moreButton.disabled = false;
    }
  }
}

function row(e) {
  const machine = e.machine ? `${e.machine}${e.runtimeId ? " (" + e.runtimeId + ")" : ""}` : "";
  const detail = e.argv && e.argv.length ? e.argv.join(" ")
    : e.action === "process.start" ? "(the agent's shell)"
    : e.signal ? "signal " + e.signal
      : e.path ? `${e.method || ""} ${e.path}`.trim() : "";
  return h("tr", { class: "audit-entry", dataset: { seq: e.seq, action: e.action, principal: e.principal } },
    h("td", { class: "mono" }, String(e.seq)),
    h("td", { class: "mono", title: e.time }, e.time ? new Date(e.time).toLocaleString() : ""),
    h("td", {}, e.principal || ""),
    h("td", { class: "mono" }, e.remote || ""),
    h("td", { class: "mono" }, e.action || ""),
    h("td", {}, machine),
    h("td", { class: "mono" }, e.process || ""),
    h("td", { class: "mono argv" }, detail));
}
