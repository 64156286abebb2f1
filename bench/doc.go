// Package bench holds porthole's end-to-end benchmarks: terminal and pipe
// throughput, keystroke echo latency, connect-to-prompt time, the memory of
// idle sessions, the size of the binary, the bootstrapper's log
// throughput and server readiness, and porthole-master's ingest, its
// delivery latency to a subscriber with 1,000 machines connected,
// terminals through its tunnel, and the reconnection storm of 1,000
// machines losing it (BenchmarkStorm, docs/reliability.md). Each benchmark drives real
// processes and PTYs and reports its figure next to the limit it is judged
// against (the bare PTY, a bare WebSocket, a bare shell), measured in the
// same run, and the ratio of the two.
//
// BenchmarkUserEcho, BenchmarkUserThroughput and BenchmarkUserSessions
// (user_test.go) measure what a user sees: the client (this process),
// `porthole agent` and `porthole-master` are separate processes, driven
// as a browser terminal drives them (POST /v1/rpc, a raw attach socket),
// with a real process on the far side of each terminal; they charge the
// agent's and the master's CPU time and context switches (/proc) to each
// keystroke and each 32 KiB of output, and run gotty beside porthole
// when it can be built from the Go module proxy (else its line says why
// it was skipped). Beside the echo run two yardsticks of what any server
// on the path costs (echofloor_test.go): bench/floor, a minimal Go
// WebSocket terminal server, and socat relaying raw TCP to a PTY (C, no
// WebSocket; skipped when socat is not installed). The older benchmarks serve the agent in this process
// and talk to it through the Go client; they remain as diagnostics.
//
// The benchmarks time their own work (medians of interleaved inner
// repetitions, with their range) and are meant to run once:
//
//	go test -v -run '^$' -bench . -benchtime 1x -count 1 -timeout 20m ./bench/
//
// which is what `make bench` does (-v: a benchmark's log is otherwise cut
// at 10 lines). docs/performance.md records the figures,
// the targets and what they mean.
package bench
