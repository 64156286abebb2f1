package protocol

import (
	"bytes"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheckVersion(t *testing.T) {
	tests := []struct {
		peer    string
		ok      bool
		mention []string // substrings the error must contain
	}{
		{peer: "", ok: true}, // no header (a browser): taken as ours
		{peer: "1.0", ok: true},
		{peer: "1.7", ok: true}, // minor versions interoperate
		{peer: "1", ok: false},
		{peer: "1.0.3", ok: false},
		{peer: "2.0", mention: []string{"mismatch", "2.0", Version}},
		{peer: "0.9", mention: []string{"mismatch", "0.9", Version}},
		{peer: "10.0", mention: []string{"10.0", Version}},
		{peer: "abc", mention: []string{`"abc"`, "major.minor", Version}},
		{peer: "x.0", mention: []string{`"x.0"`, Version}},
		{peer: "-1.0", mention: []string{`"-1.0"`, Version}},
		{peer: ".1", mention: []string{`".1"`, Version}},
		{peer: " 1.0", mention: []string{Version}},
	}
	for _, tt := range tests {
		t.Run(tt.peer, func(t *testing.T) {
			err := CheckVersion(tt.peer)
			if tt.ok {
				if err != nil {
					t.Fatalf("CheckVersion(%q) = %v, want nil", tt.peer, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckVersion(%q) = nil, want an error", tt.peer)
			}
			for _, m := range tt.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("CheckVersion(%q) = %q, want it to mention %q", tt.peer, err, m)
				}
			}
		})
	}
}

func TestVersionIsCompatibleWithItself(t *testing.T) {
	if err := CheckVersion(Version); err != nil {
		t.Fatal(err)
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		err  string // substring of the error; "" means success
	}{
		{in: "TERM", want: syscall.SIGTERM},
		{in: "SIGTERM", want: syscall.SIGTERM},
		{in: "term", want: syscall.SIGTERM},
		{in: "sigterm", want: syscall.SIGTERM},
		{in: "SigKill", want: syscall.SIGKILL},
		{in: "KILL", want: 9},
		{in: "HUP", want: 1},
		{in: "INT", want: 2},
		{in: "QUIT", want: 3},
		{in: "USR1", want: 10},
		{in: "USR2", want: 12},
		{in: "WINCH", want: 28},
		{in: "CONT", want: 18},
		{in: "STOP", want: 19},
		{in: "TSTP", want: 20},
		{in: "SYS", want: 31},
		{in: "15", want: 15},
		{in: "1", want: 1},
		{in: "34", want: 34}, // real-time signals have no name
		{in: "64", want: 64},
		{in: "", err: "empty"},
		{in: "0", err: "out of range"},
		{in: "65", err: "out of range"},
		{in: "-9", err: "unknown signal"},
		{in: "SIG", err: "unknown signal"},
		{in: "FOO", err: "unknown signal"},
		{in: "SIGFOO", err: "unknown signal"},
		{in: " TERM", err: "unknown signal"},
		{in: "9.0", err: "not a number"},
		{in: "+15", err: "unknown signal"},
		{in: "RTMIN", err: "unknown signal"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSignal(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseSignal(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSignal(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestSignalName(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		want string
	}{
		{syscall.SIGHUP, "HUP"},
		{syscall.SIGINT, "INT"},
		{syscall.SIGKILL, "KILL"},
		{syscall.SIGSEGV, "SEGV"},
		{syscall.SIGTERM, "TERM"},
		{syscall.SIGCHLD, "CHLD"},
		{syscall.SIGWINCH, "WINCH"},
		{syscall.Signal(6), "ABRT"},
		{syscall.Signal(29), "IO"},
		{syscall.Signal(31), "SYS"},
		{syscall.Signal(32), "32"},
		{syscall.Signal(34), "34"},
		{syscall.Signal(64), "64"},
	}
	for _, tt := range tests {
		if got := SignalName(tt.sig); got != tt.want {
			t.Errorf("SignalName(%d) = %q, want %q", int(tt.sig), got, tt.want)
		}
	}
}

// Every signal number the wire accepts survives SignalName then ParseSignal,
// and named ones are named with the SIG prefix stripped.
func TestSignalRoundTrip(t *testing.T) {
	for n := 1; n <= 64; n++ {
		sig := syscall.Signal(n)
		name := SignalName(sig)
		if strings.HasPrefix(name, "SIG") {
			t.Errorf("SignalName(%d) = %q: wire names have no SIG prefix", n, name)
		}
		got, err := ParseSignal(name)
		if err != nil || got != sig {
			t.Errorf("ParseSignal(SignalName(%d) = %q) = %d, %v", n, name, got, err)
		}
		if got, err := ParseSignal("SIG" + strings.ToLower(name)); n <= 31 && (err != nil || got != sig) {
			t.Errorf("ParseSignal(%q) = %d, %v", "SIG"+strings.ToLower(name), got, err)
		}
	}
}

func TestParseStream(t *testing.T) {
	tests := []struct {
		in   string
		want Stream
		ok   bool
	}{
		{"stdout", Stdout, true},
		{"stderr", Stderr, true},
		{"stdin", 0, false}, // output streams only
		{"STDOUT", 0, false},
		{"", 0, false},
		{"1", 0, false},
		{" stdout", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseStream(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseStream(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("Stream(%d).String() = %q, want %q", got, got.String(), tt.in)
		}
	}
}

func TestStreamString(t *testing.T) {
	for s, want := range map[Stream]string{Stdin: "stdin", Stdout: "stdout", Stderr: "stderr", 3: "stream(3)", 255: "stream(255)"} {
		if got := s.String(); got != want {
			t.Errorf("Stream(%d).String() = %q, want %q", byte(s), got, want)
		}
	}
}

func TestParseOutputFrame(t *testing.T) {
	hdr := func(s byte, off ...byte) []byte {
		b := make([]byte, OutputHeaderLen)
		b[0] = s
		copy(b[OutputHeaderLen-len(off):], off)
		return b
	}
	tests := []struct {
		name    string
		frame   []byte
		stream  Stream
		off     int64
		payload string
		err     string
	}{
		{name: "nil", frame: nil, err: "shorter than its 9-byte header"},
		{name: "empty", frame: []byte{}, err: "shorter"},
		{name: "stream byte only", frame: []byte{1}, err: "frame of 1 bytes"},
		{name: "8 bytes", frame: hdr(1)[:8], err: "frame of 8 bytes"},
		{name: "stdin stream", frame: hdr(0), err: "stream 0"},
		{name: "stream 3", frame: append(hdr(3), 'x'), err: "stream 3"},
		{name: "stream 255", frame: hdr(255), err: "stream 255"},
		{name: "offset over 2^62", frame: hdr(1, 0x40, 0, 0, 0, 0, 0, 0, 1), err: "out of range"},
		{name: "offset 2^64-1", frame: hdr(2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), err: "out of range"},
		{name: "header only", frame: hdr(1, 7), stream: Stdout, off: 7},
		{name: "offset 2^62", frame: hdr(2, 0x40, 0, 0, 0, 0, 0, 0, 0), stream: Stderr, off: 1 << 62},
		{name: "stdout", frame: append(hdr(1, 0x01, 0x00), "hi"...), stream: Stdout, off: 256, payload: "hi"},
		{name: "stderr", frame: append(hdr(2, 0x01, 0x02, 0x03, 0x04, 0x05), "err\n"...), stream: Stderr, off: 0x0102030405, payload: "err\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, off, payload, err := ParseOutputFrame(tt.frame)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				if s != 0 || off != 0 || payload != nil {
					t.Errorf("on error got %v, %d, %q; want zero values", s, off, payload)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s != tt.stream || off != tt.off || string(payload) != tt.payload {
				t.Errorf("got %v@%d %q, want %v@%d %q", s, off, payload, tt.stream, tt.off, tt.payload)
			}
			if again := AppendOutputFrame(nil, s, off, payload); !bytes.Equal(again, tt.frame) {
				t.Errorf("re-encoded % x, want % x", again, tt.frame)
			}
		})
	}
}

func TestParseInputFrame(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		want  string
		err   string
	}{
		{name: "nil", frame: nil, err: "empty binary frame"},
		{name: "empty", frame: []byte{}, err: "empty binary frame"},
		{name: "stdout", frame: []byte{1, 'a'}, err: "stream 1"},
		{name: "stderr", frame: []byte{2}, err: "stream 2"},
		{name: "stream 9", frame: []byte{9, 0}, err: "only send stdin (0)"},
		{name: "stream byte only", frame: []byte{0}, want: ""},
		{name: "ctrl-c", frame: []byte{0, 3}, want: "\x03"},
		{name: "text", frame: []byte("\x00echo hi\r"), want: "echo hi\r"},
		{name: "zero bytes", frame: []byte{0, 0, 0}, want: "\x00\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := ParseInputFrame(tt.frame)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != tt.want {
				t.Errorf("data = %q, want %q", data, tt.want)
			}
			if again := AppendInputFrame(nil, data); !bytes.Equal(again, tt.frame) {
				t.Errorf("re-encoded % x, want % x", again, tt.frame)
			}
		})
	}
}

func TestFramesAliasAndAppend(t *testing.T) {
	// Append keeps what dst held and adds one frame after it.
	dst := []byte("prefix")
	f := AppendOutputFrame(dst, Stderr, 42, []byte("xyz"))
	if !bytes.HasPrefix(f, []byte("prefix")) || len(f) != len("prefix")+OutputHeaderLen+3 {
		t.Fatalf("AppendOutputFrame = % x", f)
	}
	frame := f[len("prefix"):]
	_, _, payload, err := ParseOutputFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	payload[0] = 'X' // the payload aliases the frame
	if frame[OutputHeaderLen] != 'X' {
		t.Error("ParseOutputFrame payload does not alias the frame")
	}

	in := AppendInputFrame([]byte{0xAA}, []byte("ab"))
	if !bytes.Equal(in, []byte{0xAA, 0, 'a', 'b'}) {
		t.Fatalf("AppendInputFrame = % x", in)
	}

	// PutOutputHeader builds a frame in place, as the agent does.
	buf := append(make([]byte, OutputHeaderLen), "data"...)
	PutOutputHeader(buf, Stdout, 1<<40)
	s, off, p, err := ParseOutputFrame(buf)
	if err != nil || s != Stdout || off != 1<<40 || string(p) != "data" {
		t.Fatalf("in-place frame parsed as %v@%d %q, %v", s, off, p, err)
	}
}

// TestWireConstants pins every name and number that goes on the wire, so
// that a rename is a deliberate, visible change of the protocol.
func TestWireConstants(t *testing.T) {
	str := []struct{ got, want string }{
		{Version, "1.2"},
		{HeaderProtocol, "Porthole-Protocol"},
		{HeaderAgentVersion, "Porthole-Version"},
		{HeaderMaxMessage, "Porthole-Max-Message"},
		{SubprotocolRPC, "porthole.rpc.v1"},
		{SubprotocolAttach, "porthole.attach.v1"},
		{SubprotocolRaw, "porthole.raw.v1"},
		{SubprotocolForward, "porthole.forward.v1"},
		{SubprotocolFiles, "porthole.files.v1"},
		{TokenSubprotocolPrefix, "porthole.token."},
		{MethodAgentInfo, "agent.info"},
		{MethodStart, "process.start"},
		{MethodList, "process.list"},
		{MethodGet, "process.get"},
		{MethodSignal, "process.signal"},
		{MethodKill, "process.kill"},
		{MethodResize, "process.resize"},
		{MethodCloseStdin, "process.closeStdin"},
		{MethodWrite, "process.write"},
		{MethodWait, "process.wait"},
		{MethodSubscribe, "process.subscribe"},
		{MethodUnsubscribe, "process.unsubscribe"},
		{MethodRemove, "process.remove"},
		{EventStarted, "process.started"},
		{EventOutput, "process.output"},
		{EventGap, "process.gap"},
		{EventEOF, "process.eof"},
		{EventExited, "process.exited"},
		{EventHello, "agent.hello"},
		{StreamStdoutName, "stdout"},
		{StreamStderrName, "stderr"},
		{StateRunning, "running"},
		{StateExited, "exited"},
	}
	for _, c := range str {
		if c.got != c.want {
			t.Errorf("constant %q, want %q", c.got, c.want)
		}
	}
	num := []struct{ got, want int }{
		{CodeParseError, -32700}, {CodeInvalidRequest, -32600}, {CodeMethodNotFound, -32601},
		{CodeInvalidParams, -32602}, {CodeInternalError, -32603},
		{CodeNotFound, -32001}, {CodeNotRunning, -32002}, {CodeLimit, -32003}, {CodeStartFailed, -32004},
		{CodeNotTTY, -32005}, {CodeStillRunning, -32006}, {CodeTooLarge, -32007},
		{CloseNormal, 1000}, {CloseGoingAway, 1001}, {CloseProtocolError, 1002}, {CloseTooBig, 1009},
		{CloseProcessRemoved, 4004}, {CloseIdle, 4008},
		{int(Stdin), 0}, {int(Stdout), 1}, {int(Stderr), 2}, {OutputHeaderLen, 9},
		{DefaultRows, 24}, {DefaultCols, 80}, {MaxWindowDimension, 10000},
	}
	for i, n := range num {
		if n.got != n.want {
			t.Errorf("numeric constant #%d = %d, want %d", i, n.got, n.want)
		}
	}
}
