package cheapi

// che-machine-exec adapted to a local agent: create, check, resize,
// listContainers on /connect, onExecExit/onExecError broadcasts, and raw
// text both ways on /attach/{id}.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/protocol"
)

// meProc marks one of the agent's processes as a machine-exec exec.
type meProc struct {
	id int
	p  *agent.Process
}

// machineExec is che-machine-exec's MachineExec (the fields a local agent
// uses).
type machineExec struct {
	Identifier struct {
		MachineName   string `json:"machineName"`
		ContainerName string `json:"containerName"`
	} `json:"identifier"`
	Cmd  []string `json:"cmd"`
	Type string   `json:"type"`
	TTY  bool     `json:"tty"`
	Cols int      `json:"cols"`
	Rows int      `json:"rows"`
	Cwd  string   `json:"cwd"`
}

// resolveCommand is che-machine-exec's command resolution: the shell is
// cmd[0] for type ""/"shell", else the agent's shell; a leading
// "SHELL -c" is dropped; the command runs as SHELL -c "cd CWD; CMD".
func resolveCommand(me machineExec, defShell string) []string {
	cmd := me.Cmd
	shell := defShell
	if (me.Type == "" || me.Type == "shell") && len(cmd) > 0 {
		shell = cmd[0]
	}
	if len(cmd) > 1 && cmd[1] == "-c" {
		cmd = cmd[2:]
	}
	if len(cmd) == 0 {
		cmd = []string{shell}
	}
	line := strings.Join(cmd, " ")
	if cwd := strings.TrimPrefix(me.Cwd, "file://"); cwd != "" {
		line = "cd " + cwd + "; " + line
	}
	return []string{shell, "-c", line}
}

func meCreate(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var me machineExec
	if err := decodeParams(raw, &me); err != nil {
		return nil, nil, err
	}
	s := t.s
	if n := me.Identifier.MachineName; n != "" && n != s.opts.MachineName {
		return nil, nil, errorf(codeInvalidParams, "machine %q not found: this agent serves machine %q", n, s.opts.MachineName)
	}
	sp := protocol.StartParams{Name: "che-exec", Argv: resolveCommand(me, s.opts.Shell), TTY: me.TTY}
	if me.TTY {
		size, ok := protocol.WindowSize{Rows: protocol.DefaultRows, Cols: protocol.DefaultCols}, true
		if me.Cols != 0 || me.Rows != 0 {
			size, ok = winsize(float64(me.Cols), float64(me.Rows))
		}
		if !ok {
			return nil, nil, errorf(codeInvalidParams, "cols and rows must be 1..%d", protocol.MaxWindowDimension)
		}
		sp.Size = size
		sp.Env = []string{"TERM=xterm"}
	}
	p, err := s.a.Start(sp)
	if err != nil {
		return nil, nil, &rpcError{codeInvalidParams, err.Error()}
	}
	id, _ := strconv.Atoi(p.ID())
	p.SetExt(&meProc{id: id, p: p})
	// The exit is watched once the answer is queued, so that the id
	// reaches the client before onExecExit names it.
	watch := func() {
		s.a.Go(func(ctx context.Context) {
			select {
			case <-p.Done():
			case <-ctx.Done():
				return
			}
			info := p.Info()
			if info.ExitCode != nil && *info.ExitCode == 0 {
				s.broadcast("onExecExit", struct {
					ID   int `json:"id"`
					Code int `json:"code"`
				}{id, 0})
				return
			}
			s.broadcast("onExecError", struct {
				ID    int    `json:"id"`
				Stack string `json:"stack"`
			}{id, "command terminated: " + agent.ExitReason(info)})
		})
	}
	return id, watch, nil
}

// lookupME finds an exec by its id.
func (s *server) lookupME(id int) (*meProc, *rpcError) {
	if p, ok := s.a.Lookup(strconv.Itoa(id)); ok {
		if m, ok := p.Ext().(*meProc); ok {
			return m, nil
		}
	}
	return nil, errorf(codeInvalidParams, "Exec '%d' was not found", id)
}

func meCheck(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var p struct {
		ID int `json:"id"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, nil, err
	}
	if _, rerr := t.s.lookupME(p.ID); rerr != nil {
		return nil, nil, rerr
	}
	return p.ID, nil, nil
}

func meResize(t *tunnel, raw json.RawMessage) (any, func(), error) {
	var p struct {
		ID   int `json:"id"`
		Cols int `json:"cols"`
		Rows int `json:"rows"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, nil, err
	}
	m, rerr := t.s.lookupME(p.ID)
	if rerr != nil {
		return nil, nil, rerr
	}
	size, ok := winsize(float64(p.Cols), float64(p.Rows))
	if !ok {
		return nil, nil, errorf(codeInvalidParams, "cols and rows must be 1..%d", protocol.MaxWindowDimension)
	}
	if err := m.p.Resize(size); err != nil {
		return nil, nil, &rpcError{codeInvalidParams, err.Error()}
	}
	return struct {
		ID   int    `json:"id"`
		Text string `json:"text"`
	}{p.ID, fmt.Sprintf("Exec with id %d  was successfully resized", p.ID)}, nil, nil
}

func meListContainers(t *tunnel, raw json.RawMessage) (any, func(), error) {
	host, _ := os.Hostname()
	return []struct {
		Pod       string `json:"pod"`
		Container string `json:"container"`
	}{{host, t.s.opts.MachineName}}, nil, nil
}

// serveAttach serves GET /attach/{id}: raw text in (to stdin) and out.
// Every attach gets the exec's output from the start of what the agent's
// ring holds (exactly, also for later attaches), then live output.
// Unlike Che's, the socket ends with a close frame 1000 carrying the exit
// status.
func (s *server) serveAttach(w http.ResponseWriter, r *http.Request, sess *session) {
	id, err := strconv.Atoi(r.PathValue("id"))
	var m *meProc
	if err == nil {
		var rerr *rpcError
		if m, rerr = s.lookupME(id); rerr != nil {
			err = rerr
		}
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("Exec %q was not found", r.PathValue("id")), http.StatusNotFound)
		sess.end(err)
		return
	}
	c, err := s.upgrade(w, r, sess)
	if err != nil {
		sess.end(err)
		return
	}
	ctx, cancel := context.WithCancelCause(sess.ctx)
	defer cancel(nil)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer cancel(errClientGone)
		for {
			typ, b, err := c.read()
			if err != nil {
				return
			}
			if typ != websocket.TextMessage || len(b) == 0 {
				continue
			}
			if err := s.a.WriteStdin(ctx, m.p, b); err != nil && ctx.Err() != nil {
				return
			}
		}
	}()
	s.runOutput(ctx, c, m.p, &textSink{c: c}, readDone, sess, false)
}
