// Unit tests of cast.js, run by node's test runner (node --test
// web/dashboard/src; webtest's TestDashboardSharedJS runs them).
import assert from "node:assert/strict";
import { test } from "node:test";
import { age, auditPageSize, parseCast } from "./cast.js";

const header = JSON.stringify({ version: 2, width: 80, height: 24 });

test("parseCast: events in order, pauses bounded", () => {
  const c = parseCast([header, '[0.5,"o","a"]', '[1.0,"r","100x30"]', '[10.0,"o","b"]', '[10.25,"m","lost 5 bytes"]', ""].join("\n"), 2);
  assert.equal(c.header.width, 80);
  assert.deepEqual(c.events, [[0.5, "o", "a"], [1, "r", "100x30"], [3, "o", "b"], [3.25, "m", "lost 5 bytes"]]);
});

test("parseCast: times that go back do not go back", () => {
  const c = parseCast([header, '[1,"o","a"]', '[0.5,"o","b"]', '[1.5,"o","c"]'].join("\n"));
  assert.deepEqual(c.events.map((e) => e[0]), [1, 1, 1.5]);
});

test("parseCast: bad input names its line", () => {
  assert.throws(() => parseCast(""), /empty file/);
  assert.throws(() => parseCast("not json"), /line 1 \(the header\) is not JSON/);
  assert.throws(() => parseCast(JSON.stringify({ version: 1 })), /asciicast version 1, want 2/);
  assert.throws(() => parseCast(header + '\n[0.1,"o","a"]\n{"x":1}'), /line 3 is not an event/);
  assert.throws(() => parseCast(header + '\n[0.1,"o",'), /line 2 is not JSON/);
  assert.throws(() => parseCast(header + '\n["0.1","o","a"]'), /line 2 is not an event/);
});

test("age", () => {
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(age("2026-01-01T00:00:00Z", t0 + 42_000), "42 s");
  assert.equal(age("2026-01-01T00:00:00Z", t0 + 3 * 60_000 + 59_000), "3 min");
  assert.equal(age("2026-01-01T00:00:00Z", t0 + 2 * 3600_000 + 5 * 60_000), "2 h 5 min");
  assert.equal(age("2026-01-01T00:00:00Z", t0 + 27 * 3600_000), "1 d 3 h");
  assert.equal(age("2026-01-01T00:00:00Z", t0 - 5000), "0 s"); // a clock behind the agent's
  assert.equal(age(undefined, t0), "");
  assert.equal(age("not a time", t0), "");
});

test("auditPageSize: 1..1000, else 100", () => {
  assert.equal(auditPageSize(""), 100);
  assert.equal(auditPageSize("?audit-page=3"), 3);
  assert.equal(auditPageSize("?audit-page=1000"), 1000);
  for (const bad of ["0", "1001", "-1", "2.5", "x", ""]) assert.equal(auditPageSize("?audit-page=" + bad), 100, bad);
});
