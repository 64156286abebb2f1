// The reconnection discipline of the pages, the same as the Go programs'
// (internal/backoff, docs/bootstrapper.md 5.3): after a connection that
// ended before it made progress, the wait before the next attempt is
// uniform in [0, min(max, first·2^n)) (full jitter), n the failures since
// the last progress; it starts over only once a connection made progress:
// the caller says so (progress), or the connection lived stable ms.

export class Backoff {
  // first bounds the first wait (ms, default 500), max every wait (ms,
  // default 30 s; raised to first if below it), stable is how long a
  // connection must live to count as progress by itself (ms, default 5 s;
  // 0: only progress counts). now and random are injectable for tests.
  constructor({ first = 500, max = 30000, stable = 5000, now = () => Date.now(), random = Math.random } = {}) {
    this.first = first > 0 ? first : 500;
    this.max = Math.max(max > 0 ? max : 30000, this.first);
    this.stable = stable;
    this.now = now;
    this.random = random;
    this.failures = 0; // consecutive attempts without progress
    this.since = null; // when the current connection came up
  }

  // connected records that an attempt connected: the stable measure of
  // its connection starts.
  connected() {
    this.since = this.now();
  }

  // progress records that the current connection made progress: the next
  // wait starts over from first.
  progress() {
    this.failures = 0;
  }

  // next is called once an attempt failed or its connection ended. It
  // returns the wait in ms before the next attempt, and counts this
  // failure.
  next() {
    if (this.since !== null && this.stable > 0 && this.now() - this.since >= this.stable) this.failures = 0;
    this.since = null;
    const n = this.failures++;
    return Math.floor(this.random() * this.step(n));
  }

  // step is min(max, first·2^n).
  step(n) {
    return n >= 30 ? this.max : Math.min(this.max, this.first * 2 ** n);
  }
}
