// A terminal in a browser tab of its own: #/m/RID/MACHINE/p/ID (the
// dashboard's Pop out opens it). The tab shows only that process's
// terminal, attached as the dashboard's tabs are (terminal.js: exact
// offsets, reconnection); a reload reattaches it. New shell after an
// exit starts one on the same machine and puts its id in the address.
import { h } from "./dom.js";
import { TerminalView, popoutURL } from "./terminal.js";

// popoutRoute reads the fragment: {rid, name, id}, or null when the page
// is the dashboard.
export function popoutRoute(hash = location.hash) {
  const m = /^#\/m\/([^/]+)\/([^/]+)\/p\/([^/]+)$/.exec(hash);
  if (!m) return null;
  try {
    return { rid: decodeURIComponent(m[1]), name: decodeURIComponent(m[2]), id: decodeURIComponent(m[3]) };
  } catch {
    return null;
  }
}

// Popout is the tab's one machine, as far as its terminal needs one.
export class Popout {
  constructor(route, parent) {
    this.rid = route.rid;
    this.name = route.name;
    this.isPopout = true;
    this.route = route;
    this.el = h("section", { class: "popout", dataset: { runtime: route.rid, machine: route.name } });
    this.active = null;
    parent.append(this.el);
  }

  start() {
    this.open({ id: this.route.id });
  }

  open(saved) {
    const tv = new TerminalView(this);
    this.active = tv;
    this.el.append(tv.el);
    tv.start(saved).catch((e) => tv.status(String(e.message || e), "failed"));
  }

  // tabState: the tab's title and address follow the process.
  tabState(tv) {
    if (tv !== this.active) return;
    document.title = `${tv.id != null ? "#" + tv.id + " " : ""}${this.name} — ${tv.statusEl.textContent}`;
    if (tv.id != null) {
      const url = popoutURL(this.rid, this.name, tv.id);
      if (location.pathname + location.hash !== url) history.replaceState(null, "", url);
    }
  }

  newShell(old) {
    old.close(false);
    this.open(null);
  }

  removeTerminal(tv) {
    if (this.active === tv) this.active = null;
    this.el.replaceChildren(h("p", { class: "muted" }, `The terminal of process ${tv.id ?? "?"} on ${this.name} was closed in this tab. `,
      h("a", { href: location.pathname }, "Open the dashboard")));
  }

  terminalFor(id) {
    return this.active && this.active.id === id ? this.active : undefined;
  }
}
