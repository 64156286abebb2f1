package tlsconf_test

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/internal/tlsconf"
	"github.com/porthole-dev/porthole/internal/tlsconf/tlstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer serves TLS on loopback with conf, echoing every connection.
func echoServer(t *testing.T, conf *tls.Config) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	return ln.Addr().String()
}

// serial dials addr trusting client and returns the serial number of the
// server's certificate, and the connection.
func serial(t *testing.T, addr string, client *tls.Config) (int64, *tls.Conn) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), c
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q, %v; want %q", buf, err, msg)
	}
}

// A rotated certificate is served to new connections without a restart;
// a connection opened before goes on; a half-written pair (the new
// certificate with the old key) keeps the old one in service until the
// key follows.
func TestReloaderRotation(t *testing.T) {
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Issue(t, certFile, keyFile, 1)
	r, err := tlsconf.NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64 // unix nanoseconds; read on the server's goroutines
	now.Store(time.Now().UnixNano())
	tlsconf.SetClock(r, func() time.Time { return time.Unix(0, now.Load()) })
	step := func() { now.Add(int64(tlsconf.CheckEvery)) }
	addr := echoServer(t, tlsconf.Server(r))
	client, err := tlsconf.Client(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	got, open := serial(t, addr, client)
	if got != 1 {
		t.Fatalf("serial %d; want 1", got)
	}

	// Half a rotation: the new certificate, the old key.
	ca.Issue(t, certFile+".next", keyFile+".next", 2)
	if err := os.Rename(certFile+".next", certFile); err != nil {
		t.Fatal(err)
	}
	step()
	if got, _ := serial(t, addr, client); got != 1 {
		t.Fatalf("with a mismatched pair: serial %d; want 1, the previous pair", got)
	}
	if err := os.Rename(keyFile+".next", keyFile); err != nil {
		t.Fatal(err)
	}
	// Not looked at again within CheckEvery.
	if got, _ := serial(t, addr, client); got != 1 {
		t.Fatalf("within CheckEvery: serial %d; want 1", got)
	}
	step()
	if got, _ := serial(t, addr, client); got != 2 {
		t.Fatalf("after the rotation: serial %d; want 2", got)
	}
	roundTrip(t, open, "the connection opened before the rotation goes on")
}

// Bad files and flags are named.
func TestErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not PEM"), 0o600)
	for _, c := range []struct {
		cert, key, want string
	}{
		{"", "k", "both -tls-cert and -tls-key"},
		{filepath.Join(dir, "none.crt"), garbage, "-tls-cert " + dir + "/none.crt"},
		{garbage, filepath.Join(dir, "none.key"), "-tls-key " + dir + "/none.key"},
		{garbage, garbage, "-tls-cert " + garbage + ", -tls-key " + garbage},
	} {
		if _, err := tlsconf.NewReloader(c.cert, c.key, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewReloader(%q, %q): %v; want %q", c.cert, c.key, err, c.want)
		}
	}
	if _, err := tlsconf.Client(garbage); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("Client(garbage): %v", err)
	}
	if c, err := tlsconf.Client(""); c != nil || err != nil {
		t.Errorf("Client(\"\"): %v, %v; want nil, nil (the system's roots)", c, err)
	}
}
