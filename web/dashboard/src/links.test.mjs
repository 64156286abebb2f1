// Unit tests of links.js, run by node's test runner (webtest's
// TestDashboardSharedJS runs them).
import assert from "node:assert/strict";
import { test } from "node:test";
import { openLink, safeURL } from "./links.js";

test("openLink: http and https open, every other scheme is refused", () => {
  const opened = [];
  const open = (href) => opened.push(href);
  console.warn = () => {};
  for (const u of ["http://example.com/a b", "https://example.com:8443/x?y#z", "HTTPS://EXAMPLE.COM"]) assert.equal(openLink(u, open), true, u);
  for (const u of ["javascript:alert(1)", " javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>alert(1)</script>", "file:///etc/passwd", "vscode://x", "//example.com", "example.com", ""]) {
    assert.equal(openLink(u, open), false, u);
  }
  assert.deepEqual(opened, ["http://example.com/a%20b", "https://example.com:8443/x?y#z", "https://example.com/"]);
  assert.equal(safeURL("ftp://example.com"), "");
});
