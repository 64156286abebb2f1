// Unit tests of logtext.js, run by node's test runner (webtest's
// TestDashboardSharedJS runs them).
import assert from "node:assert/strict";
import { test } from "node:test";
import { clock, downloadJSONL, downloadText, linesOf, matches, stderrTail } from "./logtext.js";

const T = "2026-11-29T00:00:00Z";
const log = (seq, installer, stream, text, partial = false) => ({ seq, time: T, type: "log", installer, stream, text, partial });

test("linesOf: partial entries go on their line, only for the same installer and stream", () => {
  const lines = linesOf([
    log(1, "a", "STDOUT", "hel", true), log(2, "a", "STDOUT", "lo"), log(3, "a", "STDOUT", "next"),
    log(4, "a", "STDERR", "x", true), log(5, "b", "STDERR", "y"), log(6, "a", "STDERR", "z"),
    { seq: 7, time: T, type: "installer", installer: "a", status: "FAILED", error: "it failed" },
    { seq: 8, time: T, type: "bootstrapper", status: "FAILED", error: "it failed" },
  ]);
  assert.deepEqual(lines.map((l) => l.text), ["hello", "next", "x", "y", "z", "installer a: FAILED — it failed", "bootstrapper: FAILED (the error above)"]);
  assert.deepEqual(lines.map((l) => l.seq), [1, 3, 4, 5, 6, 7, 8]);
  assert.equal(lines[0].entries.length, 2);
  assert.equal(lines[5].failed, true);
});

test("matches: installer, stream, events, search", () => {
  const lines = linesOf([log(1, "a", "STDOUT", "Alpha one"), log(2, "b", "STDERR", "beta two"), { seq: 3, time: T, type: "bootstrapper", status: "DONE" }]);
  const pick = (f) => lines.filter((l) => matches(l, f)).map((l) => l.seq);
  assert.deepEqual(pick({}), [1, 2, 3]);
  assert.deepEqual(pick({ installer: "b" }), [2]);
  assert.deepEqual(pick({ stream: "STDERR" }), [2]);
  assert.deepEqual(pick({ stream: "event" }), [3]);
  assert.deepEqual(pick({ search: "ALPHA" }), [1]);
  assert.deepEqual(pick({ search: "two", installer: "a" }), []);
});

test("downloads: text lines as written, JSONL the entries", () => {
  const entries = [log(1, "a", "STDOUT", "  spaced  <b>", true), log(2, "a", "STDOUT", "end"), log(3, "a", "STDERR", "err")];
  const lines = linesOf(entries);
  assert.equal(downloadText(lines), `${T} a stdout   spaced  <b>end\n${T} a stderr err\n`);
  assert.deepEqual(downloadJSONL(lines).trimEnd().split("\n").map((l) => JSON.parse(l)), entries);
});

test("stderrTail: the last n stderr lines of one installer", () => {
  const lines = linesOf([log(1, "a", "STDERR", "1"), log(2, "b", "STDERR", "other"), log(3, "a", "STDOUT", "out"), log(4, "a", "STDERR", "2"), log(5, "a", "STDERR", "3")]);
  assert.deepEqual(stderrTail(lines, "a", 2), ["2", "3"]);
  assert.deepEqual(stderrTail(lines, "c", 2), []);
});

test("clock: the time today, the date before it otherwise", () => {
  const d = new Date(2026, 10, 29, 3, 4, 5);
  assert.equal(clock(d.toISOString(), new Date(2026, 10, 29, 12)), "03:04:05");
  assert.equal(clock(d.toISOString(), new Date(2026, 10, 30, 12)), "2026-11-29 03:04:05");
  assert.equal(clock("not a time"), "");
});
