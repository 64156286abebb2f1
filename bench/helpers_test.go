package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
)

const (
	token = "bench-token"
	mib   = 1 << 20
	// reps is the number of inner repetitions whose median is reported.
	reps = 3
)

// buildDir holds binaries built once per run (see built); TestMain
// removes it.
var buildDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if gottyBuild.dir != "" {
		os.RemoveAll(gottyBuild.dir)
	}
	os.Exit(code)
}

// staticBuild builds package pkg (relative to the module root) as a
// release would: static, trimmed, stripped. The benchmarks measure the
// binary (its size, resident memory, start-up time and throughput), so
// unlike the tests they cannot re-execute the test binary
// (testutil.Programs): it is bigger, and slower under -race.
func staticBuild(ctx context.Context, pkg, out string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// moduleRoot is the directory of go.mod; go test runs in the package
// directory, one below it.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the porthole module")
	}
	return filepath.Dir(gomod), nil
}

var (
	buildDirOnce sync.Once
	builds       sync.Map // package → *build
)

type build struct {
	once sync.Once
	bin  string
	err  error
}

// built returns the path of pkg built once for this run (see staticBuild).
func built(b *testing.B, pkg string) string {
	b.Helper()
	buildDirOnce.Do(func() {
		var err error
		if buildDir, err = os.MkdirTemp("", "porthole-bench-"); err != nil {
			b.Fatal(err)
		}
	})
	v, _ := builds.LoadOrStore(pkg, &build{})
	bd := v.(*build)
	bd.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bd.bin = filepath.Join(buildDir, filepath.Base(pkg))
		bd.err = staticBuild(ctx, pkg, bd.bin)
	})
	if bd.err != nil {
		b.Fatal(bd.err)
	}
	return bd.bin
}

// porthole is the agent's binary; floor is bench/floor's.
func porthole(b *testing.B) string { return built(b, "./cmd/porthole") }
func floor(b *testing.B) string    { return built(b, "./bench/floor") }

// inProcAgent serves an agent on a loopback port of this process and
// returns its ws:// URL. The agent is shut down when the benchmark ends.
func inProcAgent(b *testing.B, o agent.Options) string {
	b.Helper()
	if o.Token == "" && !o.InsecureNoAuth {
		o.Token = token
	}
	_, addr := agenttest.Start(b, o)
	return "ws://" + addr
}

func dial(ctx context.Context, url string) (*client.Client, error) {
	return client.Dial(ctx, client.Options{URL: url, Token: token})
}

// benchCtx bounds a whole benchmark. It logs the load average, since on a
// small machine anything else running skews the figures.
func benchCtx(b *testing.B, d time.Duration) context.Context {
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.Logf("load average at start: %s", strings.TrimSpace(string(la)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	b.Cleanup(cancel)
	return ctx
}

// textFile writes a file of about size bytes of random printable ASCII
// lines (1..79 characters and a newline, so no line wraps a 80-column
// terminal) and returns its path, its exact size and its number of lines.
func textFile(b *testing.B, size int64) (path string, n int64, lines int64) {
	b.Helper()
	path = filepath.Join(b.TempDir(), fmt.Sprintf("text-%dMiB.txt", size/mib))
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_=+*#@!?()[]{}<>/|~^"
	rng := rand.New(rand.NewPCG(1, 2))
	line := make([]byte, 0, 80)
	for n < size {
		l := 1 + rng.IntN(79)
		if rem := size - n - 1; int64(l) > rem {
			l = int(max(rem, 0))
		}
		line = line[:0]
		for i := 0; i < l; i += 8 {
			x := rng.Uint64()
			for j := 0; j < 8 && i+j < l; j++ {
				line = append(line, alphabet[(x>>(8*j)&0xff)%uint64(len(alphabet))])
			}
		}
		line = append(line, '\n')
		w.Write(line)
		n += int64(len(line))
		lines++
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	return path, n, lines
}

// drain reads r to its end with a large buffer (io.Copy to io.Discard
// would use an 8 KiB one) and returns the byte count.
func drain(r io.Reader) (int64, error) {
	return drainBuf(r, make([]byte, 256<<10))
}

func drainBuf(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// settle collects the garbage of earlier work (file generation, earlier
// repetitions) so that the in-process agent, client and limit all start a
// repetition from the same clean heap.
func settle() { runtime.GC() }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the nearest-rank percentile (p in 0..100) of xs.
func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func mibps(bytes int64, d time.Duration) float64 {
	return float64(bytes) / mib / d.Seconds()
}

// report sets the benchmark's metrics and hides ns/op, which would only be
// the wall time of the whole benchmark.
func report(b *testing.B, metrics map[string]float64) {
	b.Helper()
	for unit, v := range metrics {
		b.ReportMetric(v, unit)
	}
	b.ReportMetric(0, "ns/op")
}

// verdict logs a figure against its target.
func verdict(b *testing.B, name string, got float64, op string, target float64) {
	b.Helper()
	ok := false
	switch op {
	case ">=":
		ok = got >= target
	case "<=":
		ok = got <= target
	case "<":
		ok = got < target
	}
	v := "PASS"
	if !ok {
		v = "MISS"
	}
	b.Logf("%s: %s %.4g (target %s %g)", v, name, got, op, target)
}
