// DOM helpers. Every text from the server goes into the DOM as text
// (textContent, append of strings): never as HTML.

// h creates an element. props: class, dataset, on<event> listeners, and
// attributes (false/null/undefined leave an attribute out). children:
// nodes, or anything else as text.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// badge shows a status; style.css colours it by data-status.
export function badge(status, cls = "") {
  return h("span", { class: ("badge " + cls).trim(), dataset: { status: status || "UNKNOWN" } }, status || "UNKNOWN");
}

// insertSorted inserts el among parent's children whose dataset[key]
// orders them.
export function insertSorted(parent, el, key) {
  const v = el.dataset[key];
  for (const c of parent.children) {
    if (c.dataset[key] !== undefined && c.dataset[key] > v) {
      parent.insertBefore(el, c);
      return;
    }
  }
  parent.append(el);
}
