package master

import (
	"fmt"
	"strings"
)

// Limits of the names that identify a machine: its runtime id and its
// machine name. They are checked where a name enters the master: when a
// token is minted (porthole-master token), when a token is verified
// (every handshake: the bootstrapper's /api/websocket*, the agent's
// /api/agent, and every API request), and on the API's paths and
// parameters. A name is part of the store's keys and of URLs.
const (
	// MaxRuntimeIDBytes bounds a runtime id, "workspace:env:owner".
	MaxRuntimeIDBytes = 256
	// MaxMachineNameBytes bounds a machine name.
	MaxMachineNameBytes = 128
)

// nameChar reports whether c may appear in a runtime id's part or a
// machine name: ASCII letters, digits and - . _ @ +.
func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '@' || c == '+'
}

// CheckRuntimeID checks a runtime id: three parts separated by ':'
// (workspace:env:owner), the workspace not empty, at most
// MaxRuntimeIDBytes in all, each part of ASCII letters, digits and
// - . _ @ +.
func CheckRuntimeID(rid string) error {
	if len(rid) > MaxRuntimeIDBytes {
		return fmt.Errorf("runtime id of %d bytes: at most %d", len(rid), MaxRuntimeIDBytes)
	}
	parts := strings.Split(rid, ":")
	if len(parts) != 3 {
		return fmt.Errorf("runtime id %q: want workspace:env:owner (three parts separated by ':')", rid)
	}
	if parts[0] == "" {
		return fmt.Errorf("runtime id %q: the workspace part is empty", rid)
	}
	for _, p := range parts {
		if i := badChar(p); i >= 0 {
			return fmt.Errorf("runtime id %q: character %q not allowed (letters, digits and - . _ @ + only)", rid, p[i])
		}
	}
	return nil
}

// CheckMachineName checks a machine name: 1 to MaxMachineNameBytes
// ASCII letters, digits and - . _ @ +.
func CheckMachineName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("machine name is empty")
	case len(name) > MaxMachineNameBytes:
		return fmt.Errorf("machine name of %d bytes: at most %d", len(name), MaxMachineNameBytes)
	}
	if i := badChar(name); i >= 0 {
		return fmt.Errorf("machine name %q: character %q not allowed (letters, digits and - . _ @ + only)", name, name[i])
	}
	return nil
}

// checkKey checks both names of a machine.
func checkKey(rid, name string) error {
	if err := CheckRuntimeID(rid); err != nil {
		return err
	}
	return CheckMachineName(name)
}

func badChar(s string) int {
	for i := 0; i < len(s); i++ {
		if !nameChar(s[i]) {
			return i
		}
	}
	return -1
}

// MaxTokenNameBytes bounds a client token's name (token -name).
const MaxTokenNameBytes = 128

// checkName checks a client token's name: 1 to MaxTokenNameBytes ASCII
// letters, digits and - . _ @ + (an e-mail address fits).
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("token name is empty")
	case len(name) > MaxTokenNameBytes:
		return fmt.Errorf("token name of %d bytes: at most %d", len(name), MaxTokenNameBytes)
	}
	if i := badChar(name); i >= 0 {
		return fmt.Errorf("token name %q: character %q not allowed (letters, digits and - . _ @ + only)", name, name[i])
	}
	return nil
}
