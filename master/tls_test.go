package master_test

import (
	"crypto/tls"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tlsconf"
	"github.com/porthole-dev/porthole/internal/tlsconf/tlstest"
)

// TLS end to end, with a CA made here: the master serves wss:// from a
// certificate it reloads when the files change; an agent's tunnel and
// `porthole exec` trust it with -cacert (and refuse it without); a
// certificate rotated while a session is open is served to new
// connections, and the open session goes on.
func TestTLSWithRotation(t *testing.T) {
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Issue(t, certFile, keyFile, 1)
	r, err := tlsconf.NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	tm := startMasterTLS(t, t.TempDir(), "", tlsconf.Server(r))
	const rid = "w:e:o"
	tunnelAgent(t, tm, rid, "dev", "-cacert", ca.File)
	url := tm.WS + "/api/runtimes/" + rid + "/machines/dev/agent"
	client := tm.clientToken(t)
	execCmd := func(args ...string) *exec.Cmd {
		cmd := exec.Command(porthole, append([]string{"exec", "-url", url}, args...)...)
		cmd.Env = testutil.CleanEnv("PORTHOLE_TOKEN=" + client)
		return cmd
	}
	testutil.WaitFor(t, "an exec through the master over TLS", func() bool {
		out, err := execCmd("-cacert", ca.File, "--", "echo", "over-tls").Output()
		return err == nil && string(out) == "over-tls\n"
	})
	if out, err := execCmd("--", "true").CombinedOutput(); err == nil || !strings.Contains(string(out), "certificate") {
		t.Errorf("exec without -cacert: %v, %q; want a certificate error", err, out)
	}

	// A session open across the rotation.
	session := execCmd("-cacert", ca.File, "-i", "--", "sh", "-c", "read x; echo got $x")
	stdin, _ := session.StdinPipe()
	var sessOut testutil.SyncBuffer
	session.Stdout = &sessOut
	if err := session.Start(); err != nil {
		t.Fatal(err)
	}
	var sessErr error
	sessDone := make(chan struct{})
	go func() { sessErr = session.Wait(); close(sessDone) }()
	defer func() {
		session.Process.Kill()
		<-sessDone
	}()

	ca.Issue(t, certFile, keyFile, 2)
	roots, err := tlsconf.Client(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the rotated certificate served", func() bool {
		c, err := tls.Dial("tcp", tm.addr(), roots)
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64() == 2
	})
	io.WriteString(stdin, "hello\n")
	testutil.Recv(t, "the session's end", sessDone)
	if sessErr != nil || sessOut.String() != "got hello\n" {
		t.Fatalf("the session open across the rotation: %v, %q", sessErr, sessOut.String())
	}
	if out, err := execCmd("-cacert", ca.File, "--", "echo", "after").Output(); err != nil || string(out) != "after\n" {
		t.Fatalf("exec after the rotation: %v, %q", err, out)
	}
}
