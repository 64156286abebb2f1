package protocol

import (
	"bytes"
	"testing"
)

// FuzzOutputFrame: ParseOutputFrame never panics, and a frame it accepts
// is rebuilt byte for byte by AppendOutputFrame.
func FuzzOutputFrame(f *testing.F) {
	f.Add(AppendOutputFrame(nil, Stdout, 0, []byte("hello")))
	f.Add(AppendOutputFrame(nil, Stderr, 1<<40, nil))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{3})
	f.Fuzz(func(t *testing.T, frame []byte) {
		s, off, payload, err := ParseOutputFrame(frame)
		if err != nil {
			return
		}
		if off < 0 || (s != Stdout && s != Stderr) {
			t.Fatalf("accepted stream %d offset %d", s, off)
		}
		if got := AppendOutputFrame(nil, s, off, payload); !bytes.Equal(got, frame) {
			t.Fatalf("rebuilt %x from %x", got, frame)
		}
	})
}

// FuzzInputFrame: ParseInputFrame never panics, and accepts exactly the
// frames AppendInputFrame builds.
func FuzzInputFrame(f *testing.F) {
	f.Add(AppendInputFrame(nil, []byte("ls\n")))
	f.Add([]byte{})
	f.Add([]byte{1, 'x'})
	f.Fuzz(func(t *testing.T, frame []byte) {
		payload, err := ParseInputFrame(frame)
		if err != nil {
			return
		}
		if got := AppendInputFrame(nil, payload); !bytes.Equal(got, frame) {
			t.Fatalf("rebuilt %x from %x", got, frame)
		}
	})
}

// FuzzVersionAndSignal: the peer's version header and a signal name,
// both from the wire, never panic, and what ParseSignal accepts is a
// signal in 1..64.
func FuzzVersionAndSignal(f *testing.F) {
	for _, s := range []string{"1.0", "2.3", "", "1", "x.y", "99999999999999999999.0", "TERM", "SIGKILL", "15", "-1", "0", "65"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		CheckVersion(s)
		if sig, err := ParseSignal(s); err == nil && (sig < 1 || sig > 64) {
			t.Fatalf("ParseSignal(%q) = %d", s, sig)
		}
	})
}
