package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/tarfs"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

// sinkServer serves on loopback: each connection first reads one byte,
// then, if it is 'd', gets size bytes and is closed (a download); any
// other byte is echoed back, byte for byte, until the client closes (a
// request/response).
func sinkServer(b *testing.B, size int64) int {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	buf := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				one := make([]byte, 1)
				if _, err := io.ReadFull(c, one); err != nil {
					return
				}
				if one[0] != 'd' {
					c.Write(one)
					io.Copy(c, c)
					return
				}
				for left := size; left > 0; {
					n, err := c.Write(buf[:min(int64(len(buf)), left)])
					if err != nil {
						return
					}
					left -= int64(n)
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// stream is a connection to the sink: direct TCP or forwarded.
type stream interface {
	io.ReadWriter
}

// download asks for the sink's bytes on s and counts them.
func download(s stream) (int64, time.Duration, error) {
	t0 := time.Now()
	if _, err := s.Write([]byte("d")); err != nil {
		return 0, 0, err
	}
	n, err := drain(s)
	return n, time.Since(t0), err
}

// connectRTT is the time to open a connection, send a byte, get it back.
func connectRTT(open func() (stream, func(), error)) (time.Duration, error) {
	t0 := time.Now()
	s, closeIt, err := open()
	if err != nil {
		return 0, err
	}
	defer closeIt()
	one := []byte("x")
	if _, err := s.Write(one); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(s, one); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// BenchmarkPortForward: 256 MiB from a TCP server on loopback read
// directly (the limit), through the agent's port-forward socket
// (client.DialPort, what `porthole port-forward` carries each connection
// on), and through porthole-master's proxy to the agent's tunnel; and
// the time to open a connection and get one byte back (what a request on
// a new connection pays), p50 of 200.
func BenchmarkPortForward(b *testing.B) {
	const size = 256 * mib
	ctx := benchCtx(b, 5*time.Minute)
	port := sinkServer(b, size)
	bm := startMaster(b)
	a, addr := agenttest.Start(b, agent.Options{Token: token})
	const rid, name = "bench:fwd:owner", "dev"
	tctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- tunnel.Serve(tctx, tunnel.AgentOptions{
			URL: "ws://" + bm.addr + "/api/agent",
			Header: http.Header{
				"Authorization":          {"Bearer " + bm.machineToken(b, rid, name)},
				tunnel.HeaderRuntimeID:   {rid},
				tunnel.HeaderMachineName: {name},
				tunnel.HeaderProtocol:    {protocol.Version},
			},
			Handler: a.Handler(), Trust: agent.TrustedContext,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		})
	}()
	b.Cleanup(func() { cancel(); <-served })
	viaMaster := client.Options{URL: "ws://" + bm.addr + "/api/runtimes/" + rid + "/machines/" + name + "/agent", Token: bm.clientToken(b)}
	// Until the agent's tunnel is up the master knows no such machine
	// (404) or has no tunnel for it (502, which dialThroughMaster waits
	// out).
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := dialThroughMaster(ctx, viaMaster)
		if err == nil {
			c.Close()
			break
		}
		var he *client.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusNotFound || time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // polling the master for the tunnel to come up
	}
	direct := client.Options{URL: "ws://" + addr, Token: token}

	opens := []func() (stream, func(), error){
		func() (stream, func(), error) {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return nil, nil, err
			}
			return c, func() { c.Close() }, nil
		},
	}
	for _, o := range []client.Options{direct, viaMaster} {
		opens = append(opens, func() (stream, func(), error) {
			c, err := client.DialPort(ctx, o, port)
			if err != nil {
				return nil, nil, err
			}
			return c, func() { c.Close(protocol.CloseNormal, "") }, nil
		})
	}
	names := []string{"TCP", "forward", "forward through the master"}
	rates := make([][]float64, len(opens))
	rtts := make([][]float64, len(opens))
	for i := range reps {
		for j, open := range opens {
			settle()
			s, closeIt, err := open()
			if err != nil {
				b.Fatalf("%s: %v", names[j], err)
			}
			n, d, err := download(s)
			closeIt()
			if err != nil || n != size {
				b.Fatalf("%s: %d bytes, %v; want %d", names[j], n, err, size)
			}
			rates[j] = append(rates[j], mibps(n, d))
			var us []float64
			for range 200 {
				d, err := connectRTT(open)
				if err != nil {
					b.Fatalf("%s connect: %v", names[j], err)
				}
				us = append(us, float64(d.Microseconds()))
			}
			rtts[j] = append(rtts[j], percentile(us, 50))
		}
		b.Logf("rep %d: %.0f / %.0f / %.0f MiB/s, connect+byte p50 %.0f / %.0f / %.0f µs (TCP / forward / through the master)",
			i+1, rates[0][i], rates[1][i], rates[2][i], rtts[0][i], rtts[1][i], rtts[2][i])
	}
	t, f, m := median(rates[0]), median(rates[1]), median(rates[2])
	report(b, map[string]float64{
		"tcp_MiB/s": t, "forward_MiB/s": f, "master_MiB/s": m, "ratio": f / t, "master_ratio": m / t,
		"tcp_connect_µs": median(rtts[0]), "forward_connect_µs": median(rtts[1]), "master_connect_µs": median(rtts[2]),
	})
	verdict(b, "port-forward throughput / loopback TCP", f/t, ">=", 0.7)
	verdict(b, "port-forward through the master / loopback TCP", m/t, ">=", 0.5)
}

// BenchmarkCp: a tree of one 192 MiB file and 1,024 files of 64 KiB
// (256 MiB) into the agent's machine and back, with `porthole cp` (the
// agent's own tar) and with `tar c | porthole exec -i -- tar x` (and
// `porthole exec -- tar c | tar x` back), both with the release binary.
func BenchmarkCp(b *testing.B) {
	ctx := benchCtx(b, 10*time.Minute)
	bin := porthole(b)
	url := inProcAgent(b, agent.Options{})
	work, err := os.MkdirTemp("", "porthole-bench-cp-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(work) })
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(filepath.Join(src, "small"), 0o755); err != nil {
		b.Fatal(err)
	}
	big, _, _ := textFile(b, 192*mib)
	if err := os.Rename(big, filepath.Join(src, "big")); err != nil {
		b.Fatal(err)
	}
	small := bytes.Repeat([]byte("small file "), 64<<10/11+1)[:64<<10]
	for i := range 1024 {
		if err := os.WriteFile(filepath.Join(src, "small", fmt.Sprint(i)), small, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	const total = 256 * mib
	env := append(os.Environ(), "PORTHOLE_TOKEN="+token, "PORTHOLE_URL="+url)
	sh := func(script string) (time.Duration, error) {
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-c", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("%s: %v: %s", script, err, out)
		}
		return time.Since(t0), nil
	}
	var cpUp, cpDown, tarUp, tarDown []float64
	for i := range reps {
		dst := filepath.Join(work, fmt.Sprint("rep", i))
		for _, d := range []string{"cp-up", "tar-up", "cp-down", "tar-down"} {
			if err := os.MkdirAll(filepath.Join(dst, d), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		settle()
		d, err := sh(fmt.Sprintf("%s cp -q %s :%s", bin, src, filepath.Join(dst, "cp-up")))
		if err != nil {
			b.Fatal(err)
		}
		cpUp = append(cpUp, mibps(total, d))
		settle()
		if d, err = sh(fmt.Sprintf("tar c -C %s src | %s exec -i -- tar x -C %s", work, bin, filepath.Join(dst, "tar-up"))); err != nil {
			b.Fatal(err)
		}
		tarUp = append(tarUp, mibps(total, d))
		settle()
		if d, err = sh(fmt.Sprintf("%s cp -q :%s %s", bin, src, filepath.Join(dst, "cp-down"))); err != nil {
			b.Fatal(err)
		}
		cpDown = append(cpDown, mibps(total, d))
		settle()
		if d, err = sh(fmt.Sprintf("%s exec -- tar c -C %s src | tar x -C %s", bin, work, filepath.Join(dst, "tar-down"))); err != nil {
			b.Fatal(err)
		}
		tarDown = append(tarDown, mibps(total, d))
		// The copies are what they should be.
		for _, d := range []string{"cp-up", "tar-up", "cp-down", "tar-down"} {
			var st protocol.CopyStatus
			if st, err = tarfs.Write(io.Discard, filepath.Join(dst, d, "src")); err != nil || st.Bytes != total || st.Files != 1025 {
				b.Fatalf("%s: %+v, %v", d, st, err)
			}
		}
		os.RemoveAll(dst)
		b.Logf("rep %d: up %.0f MiB/s cp, %.0f tar|exec; down %.0f cp, %.0f exec|tar", i+1, cpUp[i], tarUp[i], cpDown[i], tarDown[i])
	}
	report(b, map[string]float64{
		"cp_up_MiB/s": median(cpUp), "tar_up_MiB/s": median(tarUp), "up_ratio": median(cpUp) / median(tarUp),
		"cp_down_MiB/s": median(cpDown), "tar_down_MiB/s": median(tarDown), "down_ratio": median(cpDown) / median(tarDown),
	})
	verdict(b, "cp into the machine / tar | exec -i tar x", median(cpUp)/median(tarUp), ">=", 1.0)
	verdict(b, "cp out of the machine / exec tar c | tar x", median(cpDown)/median(tarDown), ">=", 1.0)
}
