// Package bootstrapper is `porthole bootstrap`: a drop-in for Eclipse
// Che's bootstrapper. It runs the installers of a Che config.json one
// after another (each /bin/sh -c SCRIPT in its own session), waits for
// each installer's servers to accept connections, and pushes the
// bootstrapper's and installers' statuses and the installers' output lines
// to the master as JSON-RPC 2.0 notifications over WebSockets, exactly as
// Che's does (docs/bootstrapper.md, ../shared/che-protocols.md section 2;
// in Go, package protocol/che).
//
// Beyond Che, nothing is lost on the way: both connections are
// re-established when they break, events wait in a bounded spool (memory,
// then an unlinked file) until the master has read them, each carries a
// per-boot sequence number ("bootId", "seq") so that duplicates after a
// reconnection can be dropped, and when the spool is full the oldest log
// lines give way to one event that says how many were lost. Servers are
// checked at once and then with a short backoff, not only every period;
// after DONE their liveness changes are pushed as
// installer/serverStatusChanged. Long lines are split, invalid UTF-8 is
// carried exactly.
package bootstrapper
