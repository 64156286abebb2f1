package master

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// binaries serves the porthole binaries built alongside the master at
// Che's path: /agent-binaries/linux_amd64/bootstrapper/bootstrapper (the
// porthole binary, which is the bootstrapper when run under that name),
// the same for linux_arm64, and .../porthole/porthole. Each has a
// .sha256 beside it and an X-Checksum-Sha256 header.
type binaries struct {
	dir string

	mu   sync.Mutex
	sums map[string]sum // by file path
}

type sum struct {
	mod  time.Time
	size int64
	hex  string
}

func newBinaries(dir string) *binaries {
	if dir == "" {
		if exe, err := os.Executable(); err == nil {
			dir = filepath.Dir(exe)
		}
	}
	return &binaries{dir: dir, sums: map[string]sum{}}
}

// file returns the file serving platform ("linux_amd64"): DIR/porthole-
// linux-ARCH, else DIR/porthole for the master's own architecture.
func (b *binaries) file(platform string) (string, bool) {
	var arch string
	switch platform {
	case "linux_amd64":
		arch = "amd64"
	case "linux_arm64":
		arch = "arm64"
	default:
		return "", false
	}
	p := filepath.Join(b.dir, "porthole-linux-"+arch)
	if _, err := os.Stat(p); err == nil {
		return p, true
	}
	if runtime.GOOS == "linux" && runtime.GOARCH == arch {
		p = filepath.Join(b.dir, "porthole")
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

func (b *binaries) serve(w http.ResponseWriter, r *http.Request) {
	platform, name, file := r.PathValue("platform"), r.PathValue("name"), r.PathValue("file")
	if name != "bootstrapper" && name != "porthole" {
		http.NotFound(w, r)
		return
	}
	wantSum := file == name+".sha256"
	if file != name && !wantSum {
		http.NotFound(w, r)
		return
	}
	path, ok := b.file(platform)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "no "+name+" binary for "+platform+" in "+b.dir+" (make build, or make cross for linux_arm64)")
		return
	}
	f, err := os.Open(path)
	if err != nil {
		writeJSONError(w, http.StatusNotFound, err.Error())
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	h, err := b.checksum(path, f, st)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if wantSum {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, h+"  "+name+"\n")
		return
	}
	w.Header().Set("X-Checksum-Sha256", h)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	http.ServeContent(w, r, name, st.ModTime(), f)
}

// checksum returns the file's sha256, cached while its size and mtime
// stay.
func (b *binaries) checksum(path string, f *os.File, st os.FileInfo) (string, error) {
	b.mu.Lock()
	s, ok := b.sums[path]
	b.mu.Unlock()
	if ok && s.mod.Equal(st.ModTime()) && s.size == st.Size() {
		return s.hex, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	s = sum{st.ModTime(), st.Size(), hex.EncodeToString(h.Sum(nil))}
	b.mu.Lock()
	b.sums[path] = s
	b.mu.Unlock()
	return s.hex, nil
}
