package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/porthole-dev/porthole/internal/wsconn"
	"github.com/porthole-dev/porthole/protocol"
)

// CopyError is a copy the agent reports as failed; Message names the path.
type CopyError struct{ Message string }

func (e *CopyError) Error() string { return e.Message }

// Download writes path in the agent's machine to w as a tar stream
// (docs/protocol.md §20): its top entry is path's base name. It returns
// what the agent sent, or an error: an *HTTPError for a path refused
// before the copy (404, 403), a *CopyError for one that failed during
// it, or w's error.
func Download(ctx context.Context, opts Options, path string, w io.Writer) (protocol.CopyStatus, error) {
	var st protocol.CopyStatus
	ws, max, err := dialStream(ctx, opts, "/v1/files/archive", "path="+url.QueryEscape(path), protocol.SubprotocolFiles)
	if err != nil {
		return st, err
	}
	c := wsconn.New(ws, streamOptions(opts, max))
	stop := context.AfterFunc(ctx, func() { c.Close(protocol.CloseGoingAway, "client: "+context.Cause(ctx).Error()) })
	defer stop()
	_, err = io.Copy(w, c)
	if err != nil && !errors.Is(err, wsconn.ErrStatus) {
		c.Close(protocol.CloseGoingAway, "client: "+err.Error())
		return st, err
	}
	return finishCopy(c, err)
}

// finishCopy reads the status that ends a copy socket and closes it.
func finishCopy(c *wsconn.Conn, copyErr error) (protocol.CopyStatus, error) {
	var st protocol.CopyStatus
	if err := c.ReadStatus(&st); err != nil {
		c.Close(protocol.CloseNormal, "")
		return st, fmt.Errorf("copy: no status from the agent: %w", err)
	}
	c.Finish()
	if st.Error != "" {
		return st, &CopyError{st.Error}
	}
	if copyErr != nil { // status without an error, but early
		return st, fmt.Errorf("copy: the archive ended early")
	}
	return st, nil
}

// Upload sends the tar stream write produces to the agent, which
// extracts it at path: into path when it is a directory, else as path
// (the archive's top entry renamed to path's base name, in path's parent).
// The agent's failure stops write (its writes fail) and is returned as a
// *CopyError; write's own error is returned as is and ends the copy.
func Upload(ctx context.Context, opts Options, path string, write func(io.Writer) error) (protocol.CopyStatus, error) {
	var st protocol.CopyStatus
	ws, max, err := dialStream(ctx, opts, "/v1/files/extract", "path="+url.QueryEscape(path), protocol.SubprotocolFiles)
	if err != nil {
		return st, err
	}
	c := wsconn.New(ws, streamOptions(opts, max))
	stop := context.AfterFunc(ctx, func() { c.Close(protocol.CloseGoingAway, "client: "+context.Cause(ctx).Error()) })
	defer stop()
	werr := make(chan error, 1)
	go func() {
		err := write(c)
		if err == nil {
			err = c.CloseWrite()
		} else {
			c.Close(protocol.CloseGoingAway, "client: "+err.Error())
		}
		werr <- err
	}()
	if rerr := c.ReadStatus(&st); rerr != nil {
		c.Close(protocol.CloseNormal, "")
		if err := <-werr; err != nil {
			return st, err
		}
		return st, fmt.Errorf("copy: no status from the agent: %w", rerr)
	}
	if st.Error != "" {
		c.Close(protocol.CloseNormal, "") // stops write
		<-werr
		return st, &CopyError{st.Error}
	}
	err = <-werr
	c.Finish()
	return st, err
}
