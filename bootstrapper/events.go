package bootstrapper

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/protocol/che"
)

// encoder renders the bootstrapper's events (protocol/che) as JSON-RPC
// notifications, complete but for their sequence number, which the spool
// gives each event as it queues it (see unnumbered). The envelope of each
// method is rendered once by jsonrpc2.Request (a notification: no id); per
// event only the params are marshalled, outside any lock.
type encoder struct {
	machine    string
	runtime    che.RuntimeID
	boot       string
	installers []string // ids, by index in the config
	plan       []che.PlanInstaller
	envelopes  map[string]envelope
	now        func() time.Time // the events' time
}

// envelope is what surrounds the params of one method's notification
// without "seq": pre, the params but their closing brace, `,"seq":`, the
// number, tail (the params' closing brace and what jsonrpc2 writes after
// the params).
type envelope struct{ pre, tail []byte }

// Plan returns what STARTING announces of installers.
func Plan(installers []Installer) []che.PlanInstaller {
	p := make([]che.PlanInstaller, len(installers))
	for i, in := range installers {
		p[i] = che.PlanInstaller{ID: in.ID, Servers: in.Servers}
	}
	return p
}

func newEncoder(machine string, rid che.RuntimeID, boot string, plan []che.PlanInstaller) (*encoder, error) {
	installers := make([]string, len(plan))
	for i, in := range plan {
		installers[i] = in.ID
	}
	e := &encoder{machine: machine, runtime: rid, boot: boot, installers: installers, plan: plan, envelopes: map[string]envelope{}, now: time.Now}
	for _, m := range che.Methods {
		env, err := renderEnvelope(m)
		if err != nil {
			return nil, err
		}
		e.envelopes[m] = env
	}
	return e, nil
}

// renderEnvelope renders method's envelope from what jsonrpc2 writes
// around the params of a notification.
func renderEnvelope(method string) (envelope, error) {
	mark := json.RawMessage(`{"porthole":"params"}`)
	b, err := json.Marshal(&jsonrpc2.Request{Method: method, Params: &mark, Notif: true})
	if err != nil {
		return envelope{}, fmt.Errorf("render %s envelope: %w", method, err)
	}
	i := bytes.Index(b, mark)
	if i < 0 || bytes.Count(b, mark) != 1 {
		return envelope{}, fmt.Errorf("render %s envelope: params not found in %s", method, b)
	}
	return envelope{pre: b[:i], tail: append([]byte("}"), b[i+len(mark):]...)}, nil
}

func (e *encoder) event() che.MachineEvent {
	return che.MachineEvent{MachineName: e.machine, RuntimeID: e.runtime, Time: e.now()}
}

func (e *encoder) installer(i int) string {
	if i >= 0 && i < len(e.installers) {
		return e.installers[i]
	}
	return ""
}

// render marshals params (one of che's params types, its Seq left zero so
// that it is omitted) into method's envelope, with "seq" left for the
// spool to complete: head ends with `,"seq":` and has room for the number
// and tail.
func (e *encoder) render(method string, params any) unnumbered {
	p, err := json.Marshal(params)
	if err != nil { // che's params types cannot fail to marshal
		panic(fmt.Sprintf("bootstrapper: marshal %T: %v", params, err))
	}
	env := e.envelopes[method]
	const seqKey = `,"seq":`
	b := make([]byte, 0, len(env.pre)+len(p)+len(seqKey)+20+len(env.tail))
	b = append(b, env.pre...)
	b = append(b, p[:len(p)-1]...) // without the closing brace
	b = append(b, seqKey...)
	return unnumbered{head: b, tail: env.tail}
}

// bootstrapperStatus renders a bootstrapper/statusChanged; STARTING
// carries the plan when withPlan.
func (e *encoder) bootstrapperStatus(status, errText string, withPlan bool) unnumbered {
	p := che.BootstrapperStatus{MachineEvent: e.event(), Status: status, Error: errText, BootID: e.boot}
	if status == che.StatusStarting && withPlan {
		p.Installers = e.plan
	}
	return e.render(che.MethodBootstrapperStatus, p)
}

func (e *encoder) installerStatus(inst int, status, errText string) unnumbered {
	return e.render(che.MethodInstallerStatus, che.InstallerStatus{MachineEvent: e.event(), Status: status, Installer: e.installer(inst), Error: errText, BootID: e.boot})
}

func (e *encoder) serverStatus(inst int, server, port, status string) unnumbered {
	return e.render(che.MethodServerStatus, che.ServerStatus{MachineEvent: e.event(), Installer: e.installer(inst), Server: server, Port: port, Status: status, BootID: e.boot})
}

// log renders one line (or piece of a line) of output. Invalid UTF-8 is
// replaced in text by encoding/json (U+FFFD per invalid byte) and kept
// exactly in raw.
func (e *encoder) log(inst int, stream string, text []byte, partial bool) unnumbered {
	p := che.InstallerLog{MachineEvent: e.event(), Text: string(text), Installer: e.installer(inst), Stream: stream, Partial: partial, BootID: e.boot}
	if !utf8.Valid(text) {
		p.Raw = text
	}
	return e.render(che.MethodInstallerLog, p)
}

// lost renders the event that stands for n dropped log lines, the first
// of which came from installer inst.
func (e *encoder) lost(inst int, n uint64) unnumbered {
	return e.render(che.MethodInstallerLog, che.InstallerLog{MachineEvent: e.event(), Text: che.LostText(n), Installer: e.installer(inst), Stream: che.StreamStderr, Lost: n, BootID: e.boot})
}

// undelivered renders the event that stands for n events not delivered
// when the bootstrapper ends, the first from installer inst (push.go
// report).
func (e *encoder) undelivered(inst int, n uint64) unnumbered {
	return e.render(che.MethodInstallerLog, che.InstallerLog{MachineEvent: e.event(), Text: che.UndeliveredText(n), Installer: e.installer(inst), Stream: che.StreamStderr, Lost: n, BootID: e.boot})
}

// logEvents queues output lines on a spool as installer/log events: its
// emit is what outputs calls with each line, so that a line goes from the
// pipe (output.go) through its rendering (here) to the spool (spool.go)
// and the connection (push.go).
// A piece whose frame would be larger than the master accepts (limit, the
// limit it announced; 0: none) is split in two, cut between UTF-8
// characters, the first half partial, until each fits.
type logEvents struct {
	enc   *encoder
	sp    *spool
	limit func() int64
}

func (l logEvents) emit(inst int, stream string, text []byte, partial bool) {
	u := l.enc.log(inst, stream, text, partial)
	if limit := l.limit(); limit > 0 && u.size() > limit && len(text) > 1 {
		cut := cutLine(text, len(text)/2)
		l.emit(inst, stream, text[:cut], true)
		l.emit(inst, stream, text[cut:], partial)
		return
	}
	l.sp.add(kindLog, inst, u)
}
