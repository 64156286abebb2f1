//go:build engine

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// root is the repository's root; the tests run in deploy/e2e.
var root, _ = filepath.Abs("../..")

// engineSh is the podman environment's script.
var engineSh = filepath.Join(root, "scripts/engine/engine.sh")

// detected is what engine.sh up found this machine needs.
var detected []string

// holderPID is the process keeping the engine's namespaces.
var holderPID int

// wait bounds anything awaited; generous: it matters only when something
// is broken.
const wait = 60 * time.Second

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "deploy/e2e: run as root (rootful podman, namespaces): make e2e-engine")
		os.Exit(1)
	}
	// A run killed before its cleanup may have left the namespaces: start
	// from nothing.
	if out, err := exec.Command(engineSh, "down").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "deploy/e2e: engine.sh down (what an earlier run left): %v\n%s", err, out)
		os.Exit(1)
	}
	out, err := exec.Command(engineSh, "up").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "deploy/e2e: engine.sh up: %v\n%s", err, stderrOf(err))
		os.Exit(1)
	}
	detected = strings.Fields(string(out))
	work := os.Getenv("PE_WORK")
	if work == "" {
		work = "/tmp/porthole-engine"
	}
	pid, err := os.ReadFile(filepath.Join(work, "holder.pid"))
	if err == nil {
		_, err = fmt.Sscan(string(pid), &holderPID)
	}
	code := 1
	if err != nil {
		fmt.Fprintf(os.Stderr, "deploy/e2e: the engine's holder pid: %v\n", err)
	} else {
		code = m.Run()
	}
	for _, f := range figures {
		fmt.Println("figure: " + f)
	}
	// Everything the run made (pods, containers, volumes, secrets, images)
	// is in the namespace's tmpfs store and goes with it, failed or not.
	if out, err := exec.Command(engineSh, "down").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "deploy/e2e: engine.sh down: %v\n%s", err, out)
		code = 1
	}
	os.Exit(code)
}

func stderrOf(err error) []byte {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.Stderr
	}
	return nil
}

func isDetected(w string) bool {
	for _, d := range detected {
		if d == w {
			return true
		}
	}
	return false
}

// run runs a command to completion (bounded by wait) and returns its
// stdout, stderr and exit code; -1 when it could not run or timed out.
func run(env []string, stdin string, name string, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code == 0 {
		code = -1
		e.WriteString(err.Error())
	}
	return o.String(), e.String(), code
}

// pm runs podman in the engine's namespaces and fails t unless it exits 0.
func pm(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := run(nil, "", engineSh, append([]string{"pm"}, args...)...)
	if code != 0 {
		t.Fatalf("podman %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// pmStdin is pm with a standard input.
func pmStdin(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := run(nil, stdin, engineSh, append([]string{"pm"}, args...)...)
	if code != 0 {
		t.Fatalf("podman %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// inNetns runs a command in the engine's network (and mount) namespace:
// where the pods' host network is.
func inNetns(env []string, stdin string, args ...string) (stdout, stderr string, code int) {
	return run(env, stdin, engineSh, append([]string{"run"}, args...)...)
}

// nsClient is an HTTP client whose connections are made in the engine's
// network namespace (the pods' loopback).
func nsClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			// This thread enters the namespace and is never unlocked: the
			// runtime ends it with the goroutine instead of reusing it.
			runtime.LockOSThread()
			fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", holderPID), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				ch <- res{nil, err}
				return
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				ch <- res{nil, fmt.Errorf("setns: %w", err)}
				return
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// get GETs url in the engine's network namespace with an optional bearer
// token; code 0 when it could not connect.
func get(url, token string) (code int, body string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := nsClient().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// waitFor polls cond every 10 ms until it holds, failing t after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func sha256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// need fails t when a file the Makefile should have built is missing.
func need(t testing.TB, path string) string {
	t.Helper()
	p := filepath.Join(root, path)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run make e2e-engine (it builds it first): %v", path, err)
	}
	return p
}
