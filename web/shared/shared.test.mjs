// Unit tests of web/shared, run by node's test runner (node --test
// web/shared/; webtest's TestDashboardSharedJS runs them).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { MAX_STDIN_FRAME, parseOutputFrame, stdinFrames } from "./agent.js";
import { Attachment } from "./attach.js";
import { Backoff } from "./backoff.js";

// top is a random source at the top of its range: each wait is its bound
// (less nothing: Math.floor(0.999999 * bound)).
const top = () => 0.9999999;

test("backoff: the bound doubles from first up to max", () => {
  const b = new Backoff({ first: 100, max: 1000, stable: 0, random: top });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => b.next() + 1), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(b.failures, 6);
});

test("backoff: full jitter, from 0", () => {
  const b = new Backoff({ first: 100, max: 1000, random: () => 0 });
  assert.equal(b.next(), 0);
  assert.equal(b.next(), 0);
});

test("backoff: defaults are the Go side's (500 ms, 30 s, 5 s)", () => {
  const b = new Backoff({ random: top });
  const waits = [];
  for (let i = 0; i < 9; i++) waits.push(b.next() + 1);
  assert.deepEqual(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(b.stable, 5000);
  assert.equal(new Backoff({ first: 2000, max: 1000 }).max, 2000);
});

test("backoff: connecting is not progress; progress or a stable connection is", () => {
  let now = 0;
  const b = new Backoff({ first: 100, max: 1000, stable: 5000, now: () => now, random: top });
  b.next();
  b.next(); // two failures
  b.connected();
  now += 4999; // up, but not long enough
  assert.equal(b.next() + 1, 400);
  b.connected();
  now += 5000; // stable
  assert.equal(b.next() + 1, 100);
  b.connected();
  b.progress();
  assert.equal(b.next() + 1, 100);
  assert.equal(b.next() + 1, 200);
  // stable 0: only progress counts.
  const c = new Backoff({ first: 100, max: 1000, stable: 0, now: () => now, random: top });
  c.next();
  c.connected();
  now += 1e9;
  assert.equal(c.next() + 1, 200);
});

// hexFixture reads fixtures/protocol/NAME.hex: hex bytes, # comments.
function hexFixture(name) {
  const text = readFileSync(new URL(`../../fixtures/protocol/${name}.hex`, import.meta.url), "utf8");
  const hex = text.split("\n").map((l) => l.replace(/#.*/, "")).join("").replace(/\s+/g, "");
  return Uint8Array.from(hex.match(/../g), (x) => parseInt(x, 16));
}

test("parseOutputFrame: the golden frame", () => {
  const f = parseOutputFrame(hexFixture("output-frame").buffer);
  assert.equal(f.stream, "stdout");
  assert.equal(f.offset, 18734);
  assert.equal(new TextDecoder().decode(f.payload), "✓ build passed\n");
});

test("parseOutputFrame: hostile frames", () => {
  assert.throws(() => parseOutputFrame(new Uint8Array(8)), /shorter than its 9-byte header/);
  assert.throws(() => parseOutputFrame(Uint8Array.of(3, 0, 0, 0, 0, 0, 0, 0, 0)), /names stream 3/);
  assert.throws(() => parseOutputFrame(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0)), /names stream 0/);
  assert.throws(() => parseOutputFrame(Uint8Array.of(1, 0x40, 0, 0, 0, 0, 0, 0, 1)), /offset .* out of range/);
  const f = parseOutputFrame(Uint8Array.of(2, 0x40, 0, 0, 0, 0, 0, 0, 0)); // 2^62: the largest
  assert.equal(f.stream, "stderr");
  assert.equal(f.payload.length, 0);
});

test("stdinFrames: the golden frame, and big input in frames below the limit", () => {
  const [f] = stdinFrames(new TextEncoder().encode("ls -l\r"));
  assert.deepEqual(f, hexFixture("input-frame"));
  const big = new Uint8Array(2 * MAX_STDIN_FRAME + 5).map((_, i) => i & 0xff);
  const frames = stdinFrames(big);
  assert.deepEqual(frames.map((x) => x.length), [MAX_STDIN_FRAME + 1, MAX_STDIN_FRAME + 1, 6]);
  assert.ok(frames.every((x) => x[0] === 0));
  assert.deepEqual(Uint8Array.from(frames.flatMap((x) => [...x.subarray(1)])), big);
  assert.deepEqual(stdinFrames(new Uint8Array(0)), []);
});

function frame(stream, offset, text) {
  const p = new TextEncoder().encode(text);
  const f = new Uint8Array(9 + p.length);
  f[0] = stream;
  new DataView(f.buffer).setBigUint64(1, BigInt(offset));
  f.set(p, 9);
  return f.buffer;
}

test("attachment: offsets follow frames, gaps and eof; overlaps are skipped", () => {
  const out = [];
  const gaps = [];
  const a = new Attachment({
    url: () => "",
    output: (s, b) => out.push(s + ":" + new TextDecoder().decode(b)),
    gap: (s, n) => gaps.push(s + ":" + n),
    offsets: { stdout: 3 },
  });
  a.frame(frame(1, 3, "abc"));
  a.frame(frame(1, 4, "bcdef")); // overlap: only "def" is new
  a.frame(frame(1, 5, "c")); // all of it already shown
  assert.deepEqual(out, ["stdout:abc", "stdout:def"]);
  assert.equal(a.offsets.stdout, 9);
  a.frame(frame(1, 12, "xy")); // a jump: shown as a gap
  assert.deepEqual(gaps, ["stdout:3"]);
  assert.equal(a.offsets.stdout, 14);
  a.notification({ method: "process.gap", params: { stream: "stdout", from: 14, to: 20 } });
  a.notification({ method: "process.gap", params: { stream: "stdout", from: 10, to: 18 } }); // behind: nothing
  assert.deepEqual(gaps, ["stdout:3", "stdout:6"]);
  a.frame(frame(2, 0, "err"));
  assert.deepEqual(a.offsets, { stdout: 20, stderr: 3 });
  a.notification({ method: "process.eof", params: { stream: "stderr", offset: 3 } });
  a.notification({ method: "process.exited", params: { id: "7", exitCode: 2 } });
  assert.equal(a.exited.exitCode, 2);
  assert.throws(() => a.frame(new ArrayBuffer(4)), /shorter/);
});

test("attachment: only output is progress", () => {
  let now = 0;
  const b = new Backoff({ first: 100, max: 1000, now: () => now, random: top });
  const a = new Attachment({ url: () => "", output: () => {}, backoff: b });
  b.next();
  b.next();
  a.frame(frame(1, 0, "")); // an empty frame (the agent sends none) is not
  assert.equal(b.failures, 2);
  a.notification({ method: "process.started", params: {} });
  assert.equal(b.failures, 2);
  a.frame(frame(1, 0, "x"));
  assert.equal(b.failures, 0);
});
