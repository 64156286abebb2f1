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
// The benchmarks time their own work (medians of three inner repetitions)
// and are meant to run once:
//
//	go test -run '^$' -bench . -benchtime 1x -count 1 ./bench/
//
// which is what `make bench` does. docs/performance.md records the figures,
// the targets and what they mean.
package bench
