package cheapi

// Che's terminal-agent (/pty) and the raw text output shared with
// che-machine-exec's /attach.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/protocol"
)

// Che's terminal: a new shell per connection at 200x60 with TERM=xterm.
const (
	termCols = 200
	termRows = 60
)

// termMessage is a client message of the terminal-agent.
type termMessage struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// servePTY serves GET /pty: each connection gets its own shell.
func (s *server) servePTY(w http.ResponseWriter, r *http.Request, sess *session) {
	p, startErr := s.a.Start(protocol.StartParams{
		Name: "che-terminal", Argv: []string{s.opts.TerminalShell}, TTY: true,
		Size: protocol.WindowSize{Rows: termRows, Cols: termCols}, Env: []string{"TERM=xterm"},
	})
	c, err := s.upgrade(w, r, sess)
	if err != nil {
		if p != nil {
			p.Signal(syscall.SIGHUP)
		}
		sess.end(err)
		return
	}
	if startErr != nil {
		// As Che: close 1011 with the reason.
		c.closeWith(closeInternal, startErr.Error())
		c.close()
		sess.end(startErr)
		return
	}
	sess.log = sess.log.With("process", p.ID())
	ctx, cancel := context.WithCancelCause(sess.ctx)
	defer cancel(nil)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer cancel(errClientGone)
		s.terminalInput(ctx, c, p, sess)
	}()
	sk := &textSink{c: c}
	s.runOutput(ctx, c, p, sk, readDone, sess, true)
}

var errClientGone = errors.New("client closed the connection")

// runOutput sends p's output to c until the process is done, then closes
// the socket (1000 with the exit status), or until the client went away
// (a terminal's shell is then hung up) or the agent shuts down (1001).
func (s *server) runOutput(ctx context.Context, c *conn, p *agent.Process, sk *textSink, readDone <-chan struct{}, sess *session, hangup bool) {
	var out, errOff int64
	errp := &errOff
	if p.Info().TTY {
		errp = nil
	}
	err := p.Follow(ctx, &out, errp, sk)
	switch cause := context.Cause(ctx); {
	case err == nil:
		c.closeWith(closeNormal, agent.ExitReason(sk.info))
		c.awaitPeerClose(readDone)
	case cause == errClientGone:
		if hangup {
			p.HangUp()
		}
	case sess.ctx.Err() != nil:
		c.closeWith(closeGoingAway, context.Cause(sess.ctx).Error())
	default:
		c.closeWith(closeInternal, err.Error())
	}
	c.close()
	<-readDone
	sess.end(err)
}

// terminalInput reads the client's messages. Like Che: invalid JSON,
// binary frames, data that is not a string and a resize that is not
// numbers are ignored. Unlike Che, an unknown type is ignored too (Che
// stops reading the socket), and a resize with fewer than two numbers is
// ignored (Che's agent crashes).
func (s *server) terminalInput(ctx context.Context, c *conn, p *agent.Process, sess *session) {
	for {
		typ, b, err := c.read()
		if err != nil {
			return
		}
		if typ != websocket.TextMessage {
			continue
		}
		var m termMessage
		if json.Unmarshal(b, &m) != nil {
			sess.log.Debug("terminal: not JSON, ignored")
			continue
		}
		switch m.Type {
		case "data":
			var d string
			if json.Unmarshal(m.Data, &d) != nil || d == "" {
				continue
			}
			if err := s.a.WriteStdin(ctx, p, []byte(d)); err != nil && ctx.Err() != nil {
				return
			}
		case "resize":
			var dims []float64
			if json.Unmarshal(m.Data, &dims) != nil || len(dims) < 2 {
				sess.log.Info("terminal: resize ignored: data must be [cols, rows]", "data", string(m.Data))
				continue
			}
			size, ok := winsize(dims[0], dims[1])
			if !ok {
				sess.log.Info("terminal: resize ignored: cols and rows must be 1..10000", "data", string(m.Data))
				continue
			}
			if err := p.Resize(size); err != nil {
				sess.log.Debug("terminal: resize", "err", err)
			}
		case "close":
			p.HangUp()
		default:
			sess.log.Info("terminal: unknown message type ignored", "type", m.Type)
		}
	}
}

// winsize converts Che's [cols, rows] (floats truncated, as Che's uint16
// conversion does) to a size, within the agent's bounds.
func winsize(cols, rows float64) (protocol.WindowSize, bool) {
	if cols < 1 || rows < 1 || cols > protocol.MaxWindowDimension || rows > protocol.MaxWindowDimension {
		return protocol.WindowSize{}, false
	}
	return protocol.WindowSize{Cols: uint16(cols), Rows: uint16(rows)}, true
}

// textSink sends output as WebSocket text frames, which must be UTF-8: a
// character split between reads is carried to the next frame, and bytes
// that are not UTF-8 are each replaced by U+FFFD (Che's terminal-agent
// instead lost or held back the output after such a byte).
type textSink struct {
	c     *conn
	carry [3][]byte
	info  protocol.ProcessInfo
}

func (t *textSink) Output(s protocol.Stream, _ int64, b []byte) error {
	if len(t.carry[s]) > 0 {
		b = append(t.carry[s], b...)
		t.carry[s] = nil
	}
	cut := len(b) - agent.IncompleteUTF8(b)
	if cut < len(b) {
		t.carry[s] = append([]byte(nil), b[cut:]...)
	}
	return t.send(b[:cut])
}

func (t *textSink) send(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return t.c.write(websocket.TextMessage, validUTF8(b))
}

func (t *textSink) Gap(_ protocol.Stream, from, to int64) error {
	return t.c.write(websocket.TextMessage, fmt.Appendf(nil, "\r\n[porthole: %d bytes of output were lost]\r\n", to-from))
}

func (t *textSink) EOF(s protocol.Stream, _ int64) error {
	b := t.carry[s]
	t.carry[s] = nil
	return t.send(b)
}

func (t *textSink) Exited(info protocol.ProcessInfo) error {
	t.info = info
	return nil
}

// validUTF8 returns b with every byte that is not part of a UTF-8
// character replaced by U+FFFD.
func validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}
