// A machine's servers and listening ports: the servers its installers
// declare and the TCP ports its agent reports listening (the machine's
// "ports"), each with a link that opens it through the master
// (…/ports/{port}/…). A link gets a ticket when clicked; the master
// answers it with a redirect under a site key, so that the whole site
// (its stylesheets, images, links) loads, sandboxed (docs/master.md §6).
import { siteURL, ticket } from "./api.js";
import { badge, h } from "./dom.js";

export class PortsView {
  // mv is the MachineView: rid, name.
  constructor(mv) {
    this.mv = mv;
    this.serversEl = h("tbody");
    this.portsEl = h("tbody");
    this.countEl = h("span", { class: "muted" });
    this.errorEl = h("div", { class: "ports-error error", hidden: true });
    this.el = h("div", { class: "ports" },
      h("table", { class: "servers" },
        h("thead", {}, h("tr", {}, ...["Server", "Port", "Status", "Open", "Machine URL"].map((t) => h("th", {}, t)))),
        this.serversEl),
      h("table", { class: "listening" },
        h("thead", {}, h("tr", {}, h("th", {}, "Listening port ", this.countEl), ...["Addresses", "Server", "Open"].map((t) => h("th", {}, t)))),
        this.portsEl),
      this.errorEl);
  }

  update(doc) {
    const connected = !!(doc.agent && doc.agent.connected);
    const servers = doc.servers || [];
    this.serversEl.replaceChildren(...servers.map((s) => {
      const port = parseInt(s.port, 10);
      const web = !s.protocol || s.protocol === "http"; // the master speaks plain HTTP to it
      return h("tr", { class: "server", dataset: { server: s.name } },
        h("td", { class: "mono" }, s.name), h("td", { class: "mono" }, s.port || ""),
        h("td", {}, badge(s.status, "server-status")),
        h("td", { class: "mono" }, port > 0 && web ? this.link(port, s.path || "/", connected) : ""),
        h("td", { class: "mono muted machine-url" }, s.url || ""));
    }));
    if (!servers.length) this.serversEl.append(h("tr", {}, h("td", { class: "muted", colspan: 5 }, "none")));

    const ports = doc.ports || [];
    this.countEl.textContent = connected ? `(${ports.length})` : "";
    this.portsEl.replaceChildren(...ports.map((p) => {
      const names = servers.filter((s) => parseInt(s.port, 10) === p.port).map((s) => s.name);
      return h("tr", { class: "port", dataset: { port: String(p.port) } },
        h("td", { class: "mono" }, String(p.port)),
        h("td", { class: "mono" }, (p.addresses || []).join(" ")),
        h("td", { class: "mono" }, names.join(" ")),
        h("td", { class: "mono" }, this.link(p.port, "/", connected)));
    }));
    if (!ports.length) {
      this.portsEl.append(h("tr", {}, h("td", { class: "muted", colspan: 4 },
        connected ? "none" : "unknown: the machine's agent is not connected")));
    }
  }

  // link opens port's path through the master in a new tab, with a
  // ticket got at the click (tickets are single-use and live 60 s); its
  // href, without a ticket, is what a copy of the link gives.
  link(port, path, connected) {
    const url = siteURL(this.mv.rid, this.mv.name, port, path);
    const label = `:${port}${path.startsWith("/") ? path : "/" + path}`;
    if (!connected) return h("span", { class: "muted", title: "the machine's agent is not connected" }, label);
    const open = (e) => {
      if (e.type === "auxclick" && e.button !== 1) return;
      e.preventDefault();
      this.open(url);
    };
    return h("a", { class: "open-port", href: url, target: "_blank", rel: "noopener noreferrer", dataset: { port: String(port) }, onclick: open, onauxclick: open }, label);
  }

  async open(url) {
    // The tab now, in the click's user gesture (a tab opened after an
    // await is a blocked popup); its address once the ticket is here.
    const w = window.open("about:blank", "_blank");
    if (w) w.opener = null;
    try {
      const t = await ticket();
      const u = url + (url.includes("?") ? "&" : "?") + "ticket=" + encodeURIComponent(t);
      if (w) w.location.href = u;
      else location.assign(u);
      this.errorEl.hidden = true;
    } catch (err) {
      if (w) w.close();
      this.errorEl.textContent = `cannot open port: ${err.message}`;
      this.errorEl.hidden = false;
    }
  }
}
