package protocol

import (
	"encoding/binary"
	"fmt"
)

// Stream identifies a byte stream in a binary attach frame.
type Stream byte

// Streams. Stdin flows from client to agent, stdout and stderr back. A TTY
// process has only stdout (the terminal), as on a real terminal.
const (
	Stdin  Stream = 0
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdin:
		return "stdin"
	case Stdout:
		return StreamStdoutName
	case Stderr:
		return StreamStderrName
	}
	return fmt.Sprintf("stream(%d)", byte(s))
}

// ParseStream maps "stdout"/"stderr" to a Stream.
func ParseStream(name string) (Stream, error) {
	switch name {
	case StreamStdoutName:
		return Stdout, nil
	case StreamStderrName:
		return Stderr, nil
	}
	return 0, fmt.Errorf("unknown stream %q (want stdout or stderr)", name)
}

// OutputHeaderLen is the size of the header of an output frame: one stream
// byte and the big-endian uint64 offset of the first payload byte.
const OutputHeaderLen = 9

// PutOutputHeader writes an output frame header into b[:OutputHeaderLen].
// Frames are built in place: header, then payload, in one buffer.
func PutOutputHeader(b []byte, s Stream, off int64) {
	b[0] = byte(s)
	binary.BigEndian.PutUint64(b[1:OutputHeaderLen], uint64(off))
}

// AppendOutputFrame appends an agent-to-client output frame.
func AppendOutputFrame(dst []byte, s Stream, off int64, payload []byte) []byte {
	var h [OutputHeaderLen]byte
	PutOutputHeader(h[:], s, off)
	return append(append(dst, h[:]...), payload...)
}

// ParseOutputFrame splits an agent-to-client binary frame. The payload
// aliases frame.
func ParseOutputFrame(frame []byte) (s Stream, off int64, payload []byte, err error) {
	if len(frame) < OutputHeaderLen {
		return 0, 0, nil, fmt.Errorf("output frame of %d bytes is shorter than its %d-byte header", len(frame), OutputHeaderLen)
	}
	s = Stream(frame[0])
	if s != Stdout && s != Stderr {
		return 0, 0, nil, fmt.Errorf("output frame names stream %d; want 1 (stdout) or 2 (stderr)", frame[0])
	}
	u := binary.BigEndian.Uint64(frame[1:OutputHeaderLen])
	if u > 1<<62 {
		return 0, 0, nil, fmt.Errorf("output frame offset %d out of range", u)
	}
	return s, int64(u), frame[OutputHeaderLen:], nil
}

// AppendInputFrame appends a client-to-agent stdin frame: the stream byte 0
// then the bytes.
func AppendInputFrame(dst []byte, payload []byte) []byte {
	return append(append(dst, byte(Stdin)), payload...)
}

// ParseInputFrame checks a client-to-agent binary frame and returns its
// stdin bytes (aliasing frame).
func ParseInputFrame(frame []byte) ([]byte, error) {
	if len(frame) == 0 {
		return nil, fmt.Errorf("empty binary frame: want a stream byte (0 = stdin) then data")
	}
	if Stream(frame[0]) != Stdin {
		return nil, fmt.Errorf("binary frame names stream %d; clients may only send stdin (0)", frame[0])
	}
	return frame[1:], nil
}
