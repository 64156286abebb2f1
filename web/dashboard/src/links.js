// Links in a terminal: what a process prints is not trusted, so a link
// opens only when it is http or https (web links the addon finds, and
// OSC 8 hyperlinks), in a new tab without opener or referrer. Other
// schemes (javascript:, data:, file:, a custom app's) are refused here,
// not left to the page's Content-Security-Policy alone.

// safeURL returns uri's normalized href when it is an http(s) URL, else "".
export function safeURL(uri) {
  let u;
  try {
    u = new URL(uri);
  } catch {
    return "";
  }
  return u.protocol === "http:" || u.protocol === "https:" ? u.href : "";
}

// openLink opens uri with open (window.open) when it is http(s), and
// reports whether it did.
export function openLink(uri, open = (href) => window.open(href, "_blank", "noopener,noreferrer")) {
  const href = safeURL(uri);
  if (!href) {
    console.warn("link refused: only http and https open from a terminal", uri);
    return false;
  }
  open(href);
  return true;
}
