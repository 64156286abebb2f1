// Package protocol defines porthole's wire format: protocol versions, the
// JSON-RPC 2.0 methods and their parameters, the binary frames of an attach
// stream, error codes and close codes. It does no I/O; the agent and the
// client both speak through it. docs/protocol.md describes the same contract
// for people, and fixtures/protocol holds golden messages checked by tests.
package protocol

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is the protocol version this build speaks, "major.minor". Peers
// with the same major version interoperate; a minor bump only adds optional
// fields and methods.
const Version = "1.2"

// HeaderProtocol carries the client's protocol version on every HTTP and
// WebSocket request, and the agent's on every response.
const HeaderProtocol = "Porthole-Protocol"

// HeaderAgentVersion carries the agent's build version on responses.
const HeaderAgentVersion = "Porthole-Version"

// HeaderMaxMessage, on the 101 of a byte-stream socket (port forwarding,
// file copy), is the largest message the agent reads, in bytes: the
// client's frames must not be larger.
const HeaderMaxMessage = "Porthole-Max-Message"

// HeaderPrincipal carries, on a request through porthole-master's tunnel,
// who the master authenticated (its token's name): the "who" of the
// agent's audit log lines. The agent believes it only there: on its own
// listener anyone could send it.
const HeaderPrincipal = "X-Porthole-Principal"

// WebSocket subprotocols.
const (
	// SubprotocolRPC is the control socket: JSON-RPC 2.0, one object per text frame.
	SubprotocolRPC = "porthole.rpc.v1"
	// SubprotocolAttach is the framed attach socket: binary data frames with
	// a stream byte and an offset, JSON-RPC 2.0 control in text frames.
	SubprotocolAttach = "porthole.attach.v1"
	// SubprotocolRaw is the raw attach socket for stock terminal widgets
	// (xterm.js addon-attach): output bytes as binary frames, every frame
	// received is stdin, no control messages.
	SubprotocolRaw = "porthole.raw.v1"
	// SubprotocolForward is a port-forward socket: one TCP connection's
	// bytes in binary frames, an empty binary frame ending a direction.
	SubprotocolForward = "porthole.forward.v1"
	// SubprotocolFiles is a file-copy socket: a tar stream in binary
	// frames, then one JSON status in a text frame.
	SubprotocolFiles = "porthole.files.v1"
	// TokenSubprotocolPrefix lets a browser, which cannot set headers on a
	// WebSocket, present its token: "porthole.token." + base64url(token)
	// without padding. The agent never selects it.
	TokenSubprotocolPrefix = "porthole.token."
)

// CheckVersion reports an error naming both versions when the peer's
// protocol version is not compatible with ours. An empty peer version is
// accepted as ours (clients that do not send the header, like a browser).
func CheckVersion(peer string) error {
	if peer == "" {
		return nil
	}
	pm, err := major(peer)
	if err != nil {
		return fmt.Errorf("protocol version %q: %v (this side speaks %s)", peer, err, Version)
	}
	om, _ := major(Version)
	if pm != om {
		return fmt.Errorf("protocol version mismatch: peer speaks %s, this side speaks %s", peer, Version)
	}
	return nil
}

// AtLeast reports whether version v ("major.minor") is want or a later
// minor of the same major: whether a peer has what want added. An empty or
// malformed v is not.
func AtLeast(v, want string) bool {
	vm, vn, ok1 := parse(v)
	wm, wn, ok2 := parse(want)
	return ok1 && ok2 && vm == wm && vn >= wn
}

func parse(v string) (maj, minor int, ok bool) {
	m, n, found := strings.Cut(v, ".")
	if !found || !digits(m) || !digits(n) {
		return 0, 0, false
	}
	maj, _ = strconv.Atoi(m)
	minor, _ = strconv.Atoi(n)
	return maj, minor, true
}

func major(v string) (int, error) {
	m, minor, ok := strings.Cut(v, ".")
	if !ok || !digits(m) || !digits(minor) {
		return 0, fmt.Errorf("not of the form major.minor")
	}
	return strconv.Atoi(m)
}

func digits(s string) bool {
	if s == "" || len(s) > 6 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
