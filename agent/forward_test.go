package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/wsconn"
	"github.com/porthole-dev/porthole/protocol"
)

// upperServer answers each connection with its bytes upper-cased once the
// client ended its side, then closes: it needs the half-close.
func upperServer(t *testing.T) int {
	return testutil.ServeTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(testutil.Wait))
		b, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(b))
	})
}

// One forwarded connection: bytes both ways, the client's end passed on,
// the server's end read as EOF, a clean close.
func TestForwardHalfClose(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	port := upperServer(t)
	c, err := client.DialPort(ctxT(t), client.Options{URL: ta.url, Token: token}, port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(protocol.CloseNormal, "")
	msg := strings.Repeat("abc", 100_000) // several frames
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != strings.ToUpper(msg) {
		t.Fatalf("read %d bytes (%v), want %d upper-cased", len(got), err, len(msg))
	}
	c.Finish()
}

// Refusals before the upgrade: plain HTTP errors that say what is wrong.
func TestForwardRefusals(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	closed := testutil.FreePort(t)
	cases := []struct {
		port   string
		token  string
		status int
		want   string
	}{
		{"0", token, 400, `port "0": want a TCP port 1-65535`},
		{"x", token, 400, `port "x"`},
		{"70000", token, 400, `port "70000"`},
		{strconv.Itoa(closed), token, 502, "connect to port " + strconv.Itoa(closed) + " in the machine: connect: connection refused"},
		{strconv.Itoa(closed), "wrong", 401, "invalid token"},
	}
	for _, c := range cases {
		status, b := get(t, "http://"+ta.addr+"/v1/ports/"+c.port+"/forward", c.token)
		if status != c.status || !strings.Contains(b, c.want) {
			t.Errorf("port %s: %d %q, want %d %q", c.port, status, b, c.status, c.want)
		}
	}
	// The Go client gives the same text.
	_, err := client.DialPort(ctxT(t), client.Options{URL: ta.url, Token: token}, closed)
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != 502 || !strings.Contains(he.Message, "connection refused") {
		t.Errorf("DialPort to a closed port: %v", err)
	}
}

// Shutdown ends open forwards with 1001 and the reason, and waits for them.
func TestForwardShutdown(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := client.DialPort(ctxT(t), client.Options{URL: ta.url, Token: token}, ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(protocol.CloseNormal, "")
	server := testutil.Recv(t, "the agent's connection", accepted)
	defer server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	ta.a.Shutdown(ctx, time.Second)
	_, err = io.ReadAll(c)
	var ce *wsconn.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseGoingAway || ce.Reason != agent.ErrShutdown.Error() {
		t.Errorf("read after shutdown: %v, want close 1001 %q", err, agent.ErrShutdown)
	}
	// The agent's side of the TCP connection is closed too.
	server.SetDeadline(time.Now().Add(testutil.Wait))
	if _, err := io.ReadAll(server); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("server side after shutdown: %v", err)
	}
}

// File-copy refusals: plain HTTP errors naming the path.
func TestCopyRefusals(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	cases := []struct {
		path, query string
		status      int
		want        string
	}{
		{"archive", "path=etc", 400, `path "etc": want an absolute path in the machine`},
		{"archive", "", 400, `path "": want an absolute path`},
		{"archive", "path=/no/such", 404, "/no/such: no such file or directory"},
		{"archive", "path=/", 400, "cannot copy a path without a name"},
		{"extract", "path=/no/dir/x", 404, "/no/dir: no such directory (the parent of /no/dir/x)"},
		{"extract", "path=" + file + "/", 400, file + "/: not a directory"},
	}
	for _, c := range cases {
		status, b := get(t, "http://"+ta.addr+"/v1/files/"+c.path+"?"+c.query, token)
		if status != c.status || !strings.Contains(b, c.want) {
			t.Errorf("%s?%s: %d %q, want %d %q", c.path, c.query, status, b, c.status, c.want)
		}
	}
}

// get GETs url with token and returns the status and body.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// An agent with a small message limit says so on the 101 (Porthole-Max-
// Message), and the client's frames fit it.
func TestForwardSmallMessageLimit(t *testing.T) {
	ta := startAgent(t, agent.Options{MaxMessageBytes: 4096})
	port := upperServer(t)
	c, err := client.DialPort(ctxT(t), client.Options{URL: ta.url, Token: token}, port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(protocol.CloseNormal, "")
	msg := strings.Repeat("x", 100_000)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != strings.ToUpper(msg) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(msg))
	}
}
