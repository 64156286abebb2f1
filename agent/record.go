package agent

// Session recording (porthole agent -record DIR): every TTY process's
// session written as an asciicast v2 file, its output read from the ring
// by a follower that the process never waits for, so recording cannot
// slow a session; what the follower misses is marked in the file.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/porthole-dev/porthole/agent/ring"
	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/protocol"
)

// DefaultRecordMax bounds one recording file (Options.RecordMax).
const DefaultRecordMax = 64 << 20

// recorder writes one process's asciicast v2 file.
type recorder struct {
	path  string
	clk   clock.Clock
	start time.Time
	max   int64
	input bool // record input events too

	mu      sync.Mutex // serializes events: output (run) against resize and input (callers)
	f       *os.File
	w       *bufio.Writer
	written int64
	stopped bool // the bound was reached, or the file failed
}

// newRecorder creates dir's file for p and writes its header.
func newRecorder(dir string, p *process, o *Options, clk clock.Clock) (*recorder, error) {
	name := fmt.Sprintf("%s-%s.cast", p.startedAt.UTC().Format("20060102T150405Z"), p.id)
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	rc := &recorder{path: path, clk: clk, start: clk.Now(), max: o.RecordMax, input: o.RecordInput, f: f, w: bufio.NewWriter(f)}
	header := map[string]any{
		"version": 2, "width": p.size.Cols, "height": p.size.Rows, "timestamp": p.startedAt.Unix(),
		"title": fmt.Sprint(p.argv), "env": map[string]string{"TERM": "xterm-256color"},
	}
	b, _ := json.Marshal(header)
	rc.writeLine(b)
	return rc, nil
}

// event writes [t, code, data]; mu held.
func (rc *recorder) eventLocked(code, data string) {
	if rc.stopped {
		return
	}
	t := rc.clk.Now().Sub(rc.start).Seconds()
	b, _ := json.Marshal([]any{json.Number(strconv.FormatFloat(t, 'f', 6, 64)), code, data})
	if rc.written+int64(len(b))+1 > rc.max {
		m, _ := json.Marshal([]any{json.Number(strconv.FormatFloat(t, 'f', 6, 64)), "m",
			fmt.Sprintf("[porthole] recording stopped: the file reached its bound of %d bytes (-record-max)", rc.max)})
		rc.writeLine(m)
		rc.stopped = true
		rc.w.Flush()
		return
	}
	rc.writeLine(b)
}

func (rc *recorder) writeLine(b []byte) {
	rc.w.Write(b)
	rc.w.WriteByte('\n')
	rc.written += int64(len(b)) + 1
}

func (rc *recorder) event(code, data string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.eventLocked(code, data)
}

// resize records a new terminal size.
func (rc *recorder) resize(s protocol.WindowSize) {
	rc.event("r", fmt.Sprintf("%dx%d", s.Cols, s.Rows))
}

// typed records input, with -record-input.
func (rc *recorder) typed(b []byte) {
	if rc.input {
		rc.event("i", string(b))
	}
}

// typing is typed for input whose length is known only once it was
// written: the recording is held from before the write until done (which
// must be called once, with what was written), so that the input is
// recorded before any output it causes and before the recording ends.
func (rc *recorder) typing() (done func(written []byte)) {
	if !rc.input {
		return func([]byte) {}
	}
	rc.mu.Lock()
	return func(b []byte) {
		if len(b) > 0 {
			rc.eventLocked("i", string(b))
		}
		rc.mu.Unlock()
	}
}

// run records out until it ends, then closes the file. Output is cut
// between UTF-8 characters (a character split across two reads is held
// for the next event), so the "o" events' data concatenated is the
// output exactly when the output is UTF-8.
func (rc *recorder) run(out *ring.Buffer) {
	defer func() {
		rc.mu.Lock()
		rc.w.Flush()
		rc.f.Close()
		rc.mu.Unlock()
	}()
	r, err := out.NewFollower(0)
	if err != nil {
		return
	}
	defer r.Close()
	buf := make([]byte, 32<<10)
	var held []byte
	for {
		n, err := r.Read(buf)
		var gap *ring.GapError
		switch {
		case errors.As(err, &gap):
			held = held[:0]
			rc.event("m", fmt.Sprintf("[porthole] %d bytes of output not recorded: the recorder fell behind", gap.To-gap.From))
			continue
		case err != nil: // io.EOF: the stream ended
			if len(held) > 0 {
				rc.event("o", string(held))
			}
			return
		case n == 0:
			<-r.Notify()
			continue
		}
		data := append(held, buf[:n]...)
		cut := completeUTF8(data)
		if cut > 0 {
			rc.event("o", string(data[:cut]))
		}
		held = append(held[:0], data[cut:]...)
		rc.mu.Lock()
		if rc.stopped {
			rc.mu.Unlock()
			return
		}
		rc.w.Flush() // a download sees what was recorded so far
		rc.mu.Unlock()
	}
}

// completeUTF8 returns the length of b without a UTF-8 sequence cut short
// at its end (at most 3 bytes held back).
func completeUTF8(b []byte) int {
	for i := 1; i <= 3 && i <= len(b); i++ {
		c := b[len(b)-i]
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return len(b) - i
			}
			return len(b)
		}
	}
	return len(b)
}

// serveRecording serves a process's recording (GET
// /v1/processes/{id}/recording), as far as it is written.
func (a *Agent) serveRecording(w http.ResponseWriter, r *http.Request, s *session) {
	defer s.finish(errors.New("request done"))
	id := r.PathValue("id")
	p, err := a.procs.get(id)
	if err != nil {
		http.Error(w, toRPCError(err).Message, http.StatusNotFound)
		return
	}
	if p.rec == nil {
		http.Error(w, "process "+strconv.Quote(id)+" has no recording: the agent records TTY processes with -record DIR", http.StatusNotFound)
		return
	}
	f, err := os.Open(p.rec.path)
	if err != nil {
		http.Error(w, "recording of process "+strconv.Quote(id)+": "+err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Content-Disposition", `attachment; filename="`+filepath.Base(p.rec.path)+`"`)
	http.ServeContent(w, r, "", st.ModTime(), f)
}
