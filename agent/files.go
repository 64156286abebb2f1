package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"github.com/porthole-dev/porthole/internal/tarfs"
	"github.com/porthole-dev/porthole/internal/wsconn"
	"github.com/porthole-dev/porthole/protocol"
)

// File copy (docs/protocol.md §20): the agent archives and extracts tar
// streams itself (internal/tarfs), so a copy needs no tar in the image.
// Both run as the agent's user.

// copyPath reads ?path=, which must be absolute.
func copyPath(r *http.Request) (string, *httpError) {
	p := r.URL.Query().Get("path")
	if !filepath.IsAbs(p) {
		return "", &httpError{http.StatusBadRequest, fmt.Sprintf("path %q: want an absolute path in the machine", p)}
	}
	return p, nil
}

// pathRefusal turns a file error into a refusal: 404 for a missing path,
// 403 for a permission, 400 otherwise; the message names the path.
func pathRefusal(p string, err error) *httpError {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = fmt.Errorf("%s: %w", p, pe.Err)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &httpError{http.StatusNotFound, err.Error()}
	case errors.Is(err, fs.ErrPermission):
		return &httpError{http.StatusForbidden, err.Error()}
	}
	return &httpError{http.StatusBadRequest, err.Error()}
}

// serveArchive sends ?path= as a tar stream, then the status.
func (a *Agent) serveArchive(w http.ResponseWriter, r *http.Request, s *session) {
	p, e := copyPath(r)
	if e == nil {
		if _, err := os.Lstat(p); err != nil {
			e = pathRefusal(p, err)
		} else if _, err := tarfs.RootName(p); err != nil {
			e = &httpError{http.StatusBadRequest, err.Error()}
		}
	}
	a.runCopy(w, r, s, e, func(c *wsconn.Conn) (protocol.CopyStatus, error) {
		st, err := tarfs.Write(c, p)
		if err == nil {
			err = c.CloseWrite()
		}
		return st, err
	})
}

// serveExtract extracts the client's tar stream at ?path= (into it when
// it is a directory, else as it: tarfs.Target), then sends the status.
func (a *Agent) serveExtract(w http.ResponseWriter, r *http.Request, s *session) {
	p, e := copyPath(r)
	var dir, rename string
	if e == nil {
		var err error
		if dir, rename, err = tarfs.Target(p); err != nil {
			e = pathRefusal(p, err)
		}
	}
	a.runCopy(w, r, s, e, func(c *wsconn.Conn) (protocol.CopyStatus, error) {
		st, err := tarfs.Extract(c, dir, rename)
		if err == nil {
			// What follows the archive's end, up to the client's end.
			_, err = io.Copy(io.Discard, c)
		}
		return st, err
	})
}

// runCopy refuses the request with e, or upgrades it and runs copy on
// the socket, sends its status and ends the session; shutdown closes the
// socket with 1001.
func (a *Agent) runCopy(w http.ResponseWriter, r *http.Request, s *session, e *httpError, copy func(*wsconn.Conn) (protocol.CopyStatus, error)) {
	if e != nil {
		s.finish(e)
		a.refuse(w, r, e)
		return
	}
	ws, err := a.upgradeStream(w, r, protocol.SubprotocolFiles)
	if err != nil {
		s.finish(err)
		return
	}
	c := wsconn.New(ws, a.connOptions())
	stop := context.AfterFunc(s.ctx, func() { c.Close(protocol.CloseGoingAway, ErrShutdown.Error()) })
	st, err := copy(c)
	stop()
	var ce *wsconn.CloseError
	if errors.As(err, &ce) { // the client gave up: nobody to tell
		c.Close(protocol.CloseNormal, "")
		s.finish(err)
		return
	}
	if err != nil {
		st.Error = err.Error()
		s.log.Info("copy failed", "err", err)
	}
	if c.WriteStatus(st) == nil {
		c.Finish()
	} else {
		c.Close(protocol.CloseNormal, "")
	}
	s.finish(err)
}
