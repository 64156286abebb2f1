package cheapi

// Che's exec-agent over the agent's processes: process.* methods, events
// and the per-process log behind getLogs.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/protocol"
)

// eventMask is a subscriber's event types.
type eventMask uint8

const (
	evStdout eventMask = 1 << iota
	evStderr
	evStatus
	evAll = evStdout | evStderr | evStatus
)

// parseMask reads Che's eventTypes CSV: case-insensitive, trimmed,
// unknown types ignored.
func parseMask(csv string) eventMask {
	var m eventMask
	for _, f := range strings.Split(csv, ",") {
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "stdout":
			m |= evStdout
		case "stderr":
			m |= evStderr
		case "process_status":
			m |= evStatus
		}
	}
	return m
}

// Log kinds: Che's LogKind is an int on the wire.
const (
	kindStdout = 0
	kindStderr = 1
)

// logLine is Che's LogMessage.
type logLine struct {
	Kind int       `json:"kind"`
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// lineOverhead is what a line costs against the log bound besides its
// text, so that a flood of empty lines is bounded too.
const lineOverhead = 64

// machineProcess is Che's MachineProcess.
type machineProcess struct {
	PID         uint64 `json:"pid"`
	Name        string `json:"name"`
	CommandLine string `json:"commandLine"`
	Type        string `json:"type"`
	Alive       bool   `json:"alive"`
	NativePID   int    `json:"nativePid"`
	ExitCode    int    `json:"exitCode"`
}

// execProc is the exec-agent's view of one of the agent's processes: its
// Che fields, its log of lines and its subscribers. It lives with the
// process (agent.Process.SetExt), so the agent's retention and eviction
// apply to it.
type execProc struct {
	s           *server
	p           *agent.Process
	pid         uint64
	name        string
	commandLine string
	typ         string

	mu       sync.Mutex
	log      []logLine
	logBytes int
	dropped  int // lines dropped from the front past the bound
	partial  [3][]byte
	subs     map[*tunnel]eventMask
	outbox   []event // events to send once the lock is released
	dead     bool
	exitCode int
}

func (e *execProc) info() machineProcess {
	e.mu.Lock()
	defer e.mu.Unlock()
	code := -1
	if e.dead {
		code = e.exitCode
	}
	return machineProcess{PID: e.pid, Name: e.name, CommandLine: e.commandLine, Type: e.typ,
		Alive: !e.dead, NativePID: e.p.PID(), ExitCode: code}
}

type startedEvent struct {
	Time        time.Time `json:"time"`
	PID         uint64    `json:"pid"`
	NativePID   int       `json:"nativePid"`
	Name        string    `json:"name"`
	CommandLine string    `json:"commandLine"`
}

type diedEvent struct {
	Time        time.Time `json:"time"`
	PID         uint64    `json:"pid"`
	NativePID   int       `json:"nativePid"`
	Name        string    `json:"name"`
	CommandLine string    `json:"commandLine"`
	ExitCode    int       `json:"exitCode"`
}

type outputEvent struct {
	Time time.Time `json:"time"`
	PID  uint64    `json:"pid"`
	Text string    `json:"text"`
}

// startExec starts commandLine as Che does (Shell -c, no stdin) in the
// agent's table. Nothing is read or published until release.
func (s *server) startExec(name, commandLine, typ string) (*execProc, error) {
	p, err := s.a.Start(protocol.StartParams{Name: name, Argv: []string{s.opts.Shell, "-c", commandLine}})
	if err != nil {
		return nil, &rpcError{codeProcessAPI, err.Error()}
	}
	p.CloseStdin() // Che's processes have no stdin: they read EOF
	pid, _ := strconv.ParseUint(p.ID(), 10, 64)
	e := &execProc{s: s, p: p, pid: pid, name: name, commandLine: commandLine, typ: typ, subs: make(map[*tunnel]eventMask)}
	p.SetExt(e)
	return e, nil
}

// release publishes process_started, then starts the log collector: the
// agent's viewer loop from offset 0 of both streams, so no output is
// missed however late it starts.
func (e *execProc) release() {
	e.mu.Lock()
	e.publishLocked(evStatus, "process_started", startedEvent{time.Now(), e.pid, e.p.PID(), e.name, e.commandLine})
	e.unlockAndSend()
	e.s.a.Go(func(ctx context.Context) {
		var zero, zero2 int64
		if err := e.p.Follow(ctx, &zero, &zero2, e); err != nil && ctx.Err() == nil {
			e.s.log.Debug("exec log collector ended", "pid", e.pid, "err", err)
		}
	})
}

// publishLocked queues an event for the subscribers of its type;
// unlockAndSend sends the queue once the lock is released, so that a
// client that reads slowly holds up the process's output (the agent's
// flow control) but never the log's lock. Only the collector (and release,
// before it starts) publishes, so events keep their order.
func (e *execProc) publishLocked(m eventMask, method string, params any) {
	var ts []*tunnel
	for t, mask := range e.subs {
		if mask&m != 0 {
			ts = append(ts, t)
		}
	}
	if len(ts) > 0 {
		e.outbox = append(e.outbox, event{ts, method, params})
	}
}

type event struct {
	to     []*tunnel
	method string
	params any
}

func (e *execProc) unlockAndSend() {
	out := e.outbox
	e.outbox = nil
	e.mu.Unlock()
	for _, ev := range out {
		for _, t := range ev.to {
			t.notify(ev.method, ev.params)
		}
	}
}

// Output splits output into lines (Che strips "\n" and keeps "\r").
func (e *execProc) Output(s protocol.Stream, _ int64, b []byte) error {
	e.mu.Lock()
	defer e.unlockAndSend()
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		line := b[:i]
		if len(e.partial[s]) > 0 {
			line = append(e.partial[s], line...)
			e.partial[s] = nil
		}
		e.cutLocked(s, line)
		b = b[i+1:]
	}
	// A run without "\n" longer than the line bound is cut now, into
	// lines of the bound, however the reads split it.
	e.partial[s] = append(e.partial[s], b...)
	limit := e.s.opts.LogLine
	if n := len(e.partial[s]); n > limit {
		keep := n - (n-1)/limit*limit // 1..limit bytes stay pending
		e.cutLocked(s, e.partial[s][:n-keep])
		e.partial[s] = append([]byte(nil), e.partial[s][n-keep:]...)
	}
	return nil
}

// cutLocked logs a line, cut into lines of at most the bound.
func (e *execProc) cutLocked(s protocol.Stream, line []byte) {
	for len(line) > e.s.opts.LogLine {
		e.lineLocked(s, line[:e.s.opts.LogLine])
		line = line[e.s.opts.LogLine:]
	}
	e.lineLocked(s, line)
}

// lineLocked logs a line and sends it to the subscribers.
func (e *execProc) lineLocked(s protocol.Stream, text []byte) {
	kind, m, method := kindStdout, evStdout, "process_stdout"
	if s == protocol.Stderr {
		kind, m, method = kindStderr, evStderr, "process_stderr"
	}
	l := logLine{Kind: kind, Time: time.Now(), Text: string(text)}
	e.log = append(e.log, l)
	e.logBytes += len(l.Text) + lineOverhead
	for e.logBytes > e.s.opts.LogBytes && len(e.log) > 1 {
		e.logBytes -= len(e.log[0].Text) + lineOverhead
		e.log[0] = logLine{}
		e.log = e.log[1:]
		e.dropped++
	}
	e.publishLocked(m, method, outputEvent{l.Time, e.pid, l.Text})
}

// Gap: the collector fell behind the ring (a subscriber did not read for
// longer than the agent's stall bound while the process wrote more than
// the ring holds); the loss is written into the log.
func (e *execProc) Gap(s protocol.Stream, from, to int64) error {
	e.mu.Lock()
	defer e.unlockAndSend()
	e.lineLocked(protocol.Stderr, fmt.Appendf(nil, "[porthole: %d bytes of %s were lost]", to-from, s))
	return nil
}

// EOF flushes a last line without "\n".
func (e *execProc) EOF(s protocol.Stream, _ int64) error {
	e.mu.Lock()
	defer e.unlockAndSend()
	if len(e.partial[s]) > 0 {
		e.lineLocked(s, e.partial[s])
		e.partial[s] = nil
	}
	return nil
}

// Exited publishes process_died; a process killed by a signal has exit
// code -1, as in Che.
func (e *execProc) Exited(info protocol.ProcessInfo) error {
	e.mu.Lock()
	defer e.unlockAndSend()
	e.dead = true
	e.exitCode = -1
	if info.ExitCode != nil {
		e.exitCode = *info.ExitCode
	}
	e.publishLocked(evStatus, "process_died", e.diedLocked())
	return nil
}

func (e *execProc) diedLocked() diedEvent {
	return diedEvent{time.Now(), e.pid, e.p.PID(), e.name, e.commandLine, e.exitCode}
}

// lookupExec finds an exec-agent process by Che pid.
func (s *server) lookupExec(pid uint64) (*execProc, *rpcError) {
	if p, ok := s.a.Lookup(strconv.FormatUint(pid, 10)); ok {
		if e, ok := p.Ext().(*execProc); ok {
			return e, nil
		}
	}
	return nil, errorf(codeNoProcess, "Process with id '%d' does not exist", pid)
}

func notAlive(pid uint64) *rpcError {
	return errorf(codeNotAlive, "Process with id '%d' is not alive", pid)
}

// execProcs lists the exec-agent's processes, by pid.
func (s *server) execProcs() []*execProc {
	var out []*execProc
	for _, p := range s.a.Processes() {
		if e, ok := p.Ext().(*execProc); ok {
			out = append(out, e)
		}
	}
	return out
}

// dropSubscriber forgets a closed tunnel's subscriptions.
func (s *server) dropSubscriber(t *tunnel) {
	for _, e := range s.execProcs() {
		e.mu.Lock()
		delete(e.subs, t)
		e.mu.Unlock()
	}
}

// kill sends SIGKILL to the process group, as Che does.
func (e *execProc) kill() *rpcError {
	e.mu.Lock()
	dead := e.dead
	e.mu.Unlock()
	if dead {
		return notAlive(e.pid)
	}
	if err := e.p.Signal(syscall.SIGKILL); err != nil {
		return notAlive(e.pid)
	}
	return nil
}

// logs returns Che's getLogs page: the lines in [from, till], then the
// newest limit after skipping skip from the end.
func (e *execProc) logs(from, till time.Time, limit, skip int) []logLine {
	e.mu.Lock()
	defer e.mu.Unlock()
	if till.IsZero() {
		till = time.Now()
	}
	sel := make([]logLine, 0, len(e.log))
	for _, l := range e.log {
		if !l.Time.Before(from) && !l.Time.After(till) {
			sel = append(sel, l)
		}
	}
	n := len(sel)
	lo := max(n-limit-skip, 0)
	hi := n - min(skip, n)
	if lo > hi {
		lo = hi
	}
	return sel[lo:hi]
}

// parseTime reads an optional RFC3339Nano time; the error is Che's.
func parseTime(name, v string) (time.Time, *rpcError) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errorf(codeInvalidParams, "Bad format of '%s', %v", name, err)
	}
	return t, nil
}

const defaultLogLimit = 50

// The JSON-RPC methods.

func execStart(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var p struct {
		Name, CommandLine, Type, EventTypes string
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, nil, err
	}
	if p.Name == "" {
		return nil, nil, &rpcError{codeInvalidParams, "Command name required"}
	}
	if p.CommandLine == "" {
		return nil, nil, &rpcError{codeInvalidParams, "Command line required"}
	}
	mask := evAll
	if p.EventTypes != "" {
		mask = parseMask(p.EventTypes)
	}
	e, err := t.s.startExec(p.Name, p.CommandLine, p.Type)
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	e.subs[t] = mask
	e.mu.Unlock()
	return e.info(), e.release, nil
}

type pidParams struct {
	PID uint64 `json:"pid"`
}

// execByPID decodes {"pid":N} params and finds that process.
func (t *tunnel) execByPID(raw json.RawMessage) (*execProc, pidParams, error) {
	var p pidParams
	if err := decodeParams(raw, &p); err != nil {
		return nil, p, err
	}
	e, rerr := t.s.lookupExec(p.PID)
	if rerr != nil {
		return nil, p, rerr
	}
	return e, p, nil
}

func execKill(t *tunnel, raw json.RawMessage) (any, func(), error) {
	e, p, err := t.execByPID(raw)
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	dead := e.dead
	e.mu.Unlock()
	if dead {
		return nil, nil, notAlive(p.PID)
	}
	// The signal goes once the answer is queued: Che's order is the
	// answer, then process_died.
	return struct {
		PID  uint64 `json:"pid"`
		Text string `json:"text"`
	}{p.PID, "Successfully killed"}, func() { e.p.Signal(syscall.SIGKILL) }, nil
}

type subscribeResult struct {
	PID        uint64 `json:"pid"`
	EventTypes string `json:"eventTypes"`
	Text       string `json:"text"`
}

func execSubscribe(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var p struct {
		PID        uint64 `json:"pid"`
		EventTypes string `json:"eventTypes"`
		After      string `json:"after"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, nil, err
	}
	mask := parseMask(p.EventTypes)
	if mask == 0 {
		return nil, nil, &rpcError{codeInvalidParams, "Required at least 1 valid event type"}
	}
	after, rerr := parseTime("after", p.After)
	if rerr != nil {
		return nil, nil, rerr
	}
	e, rerr := t.s.lookupExec(p.PID)
	if rerr != nil {
		return nil, nil, rerr
	}
	res := subscribeResult{p.PID, p.EventTypes, "Successfully subscribed"}
	e.mu.Lock()
	defer e.mu.Unlock()
	if p.After == "" {
		if e.dead {
			return nil, nil, notAlive(p.PID)
		}
		if _, dup := e.subs[t]; dup {
			return nil, nil, &rpcError{codeProcessAPI, "Already subscribed"}
		}
		e.subs[t] = mask
		return res, nil, nil
	}
	// Replay every line after the time (both kinds, as Che does), then
	// either subscribe or, for a dead process, report its death; all
	// before the answer, under the log's lock, so nothing is missed or
	// sent twice.
	for _, l := range e.log {
		if l.Time.After(after) {
			method := "process_stdout"
			if l.Kind == kindStderr {
				method = "process_stderr"
			}
			t.notify(method, outputEvent{l.Time, e.pid, l.Text})
		}
	}
	if e.dead {
		t.notify("process_died", e.diedLocked())
		return res, nil, nil
	}
	e.subs[t] = mask
	return res, nil, nil
}

func execUnsubscribe(t *tunnel, raw json.RawMessage) (any, func(), error) {
	e, p, err := t.execByPID(raw)
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	delete(e.subs, t)
	e.mu.Unlock()
	return struct {
		PID  uint64 `json:"pid"`
		Text string `json:"text"`
	}{p.PID, "Successfully unsubscribed"}, nil, nil
}

func execUpdateSubscriber(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var p struct {
		PID        uint64 `json:"pid"`
		EventTypes string `json:"eventTypes"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, nil, err
	}
	if p.EventTypes == "" {
		return nil, nil, &rpcError{codeInvalidParams, "'eventTypes' required for subscriber update"}
	}
	e, rerr := t.s.lookupExec(p.PID)
	if rerr != nil {
		return nil, nil, rerr
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead {
		return nil, nil, notAlive(p.PID)
	}
	if _, ok := e.subs[t]; !ok {
		return nil, nil, errorf(codeProcessAPI, "No subscriber with id '%s'", t.id)
	}
	e.subs[t] = parseMask(p.EventTypes)
	return subscribeResult{p.PID, p.EventTypes, "Subscriber successfully updated"}, nil, nil
}

func execGetLogs(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var p struct {
		PID   uint64 `json:"pid"`
		From  string `json:"from"`
		Till  string `json:"till"`
		Limit int    `json:"limit"`
		Skip  int    `json:"skip"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, nil, err
	}
	from, rerr := parseTime("from", p.From)
	if rerr != nil {
		return nil, nil, rerr
	}
	till, rerr := parseTime("till", p.Till)
	if rerr != nil {
		return nil, nil, rerr
	}
	e, rerr := t.s.lookupExec(p.PID)
	if rerr != nil {
		return nil, nil, rerr
	}
	limit := max(p.Limit, 0)
	if limit == 0 {
		limit = defaultLogLimit
	}
	return e.logs(from, till, limit, max(p.Skip, 0)), nil, nil
}

func execGetProcess(t *tunnel, raw json.RawMessage) (any, func(), error) {
	e, _, err := t.execByPID(raw)
	if err != nil {
		return nil, nil, err
	}
	return e.info(), nil, nil
}

func execGetProcesses(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var p struct {
		All bool `json:"all"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, nil, err
	}
	return t.s.listExec(p.All), nil, nil
}

func (s *server) listExec(all bool) []machineProcess {
	out := []machineProcess{}
	for _, e := range s.execProcs() {
		if mp := e.info(); all || mp.Alive {
			out = append(out, mp)
		}
	}
	return out
}
