package bootstrapper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/porthole-dev/porthole/protocol/che"
)

// Installer is one element of the config.json array Che writes (Gson from
// InstallerImpl). Che's own bootstrapper reads only id, description,
// version, script and the servers' ports; porthole also checks
// dependencies. Unknown fields are ignored.
type Installer struct {
	ID           string            `json:"id"`
	Version      string            `json:"version,omitempty"`
	Name         string            `json:"name,omitempty"`
	Description  string            `json:"description,omitempty"`
	Dependencies []string          `json:"dependencies,omitempty"`
	Properties   json.RawMessage   `json:"properties,omitempty"`
	Script       string            `json:"script"`
	Servers      map[string]Server `json:"servers,omitempty"`
}

// Server is a server an installer starts: RUNNING once its port accepts
// connections on 127.0.0.1. It is che.Server, the type STARTING announces
// in its plan: the config's servers go out verbatim, so the two are one
// type and cannot drift apart.
type Server = che.Server

// Endpoint is a server's port split into the network and address dialled
// to check it.
type Endpoint struct {
	Network string // "tcp" or "udp"
	Addr    string // "127.0.0.1:PORT"
}

// ParsePort parses a server port as Che writes it: "4412" (tcp),
// "4412/tcp" or "4412/udp".
func ParsePort(port string) (Endpoint, error) {
	if port == "" {
		return Endpoint{}, errors.New("missing")
	}
	num, proto, found := strings.Cut(port, "/")
	network := "tcp"
	if found {
		switch strings.ToLower(proto) {
		case "tcp":
		case "udp":
			network = "udp"
		default:
			return Endpoint{}, errors.New("unknown protocol")
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > 65535 || num[0] == '+' {
		return Endpoint{}, errors.New("not a port number (1-65535)")
	}
	return Endpoint{Network: network, Addr: "127.0.0.1:" + strconv.Itoa(n)}, nil
}

// LoadConfig reads and checks the installers file at path. Every error
// starts with path and names the installer and the field at fault, e.g.
// `config.json: installer[2] "org.x": servers["web"].port "80/xyz": unknown protocol`.
func LoadConfig(path string) ([]Installer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ins, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ins, nil
}

// ParseConfig parses and checks a config.json document (see LoadConfig).
func ParseConfig(data []byte) ([]Installer, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, jsonError(data, err, "want a JSON array of installers")
	}
	if len(raw) == 0 {
		return nil, errors.New("no installers, nothing to start")
	}
	ins := make([]Installer, len(raw))
	index := map[string]int{}
	for i, r := range raw {
		if err := json.Unmarshal(r, &ins[i]); err != nil {
			return nil, fmt.Errorf("installer[%d]: %w", i, jsonError(r, err, "want an installer object"))
		}
		in := &ins[i]
		if in.ID == "" {
			return nil, fmt.Errorf("installer[%d]: id is missing", i)
		}
		if j, dup := index[in.ID]; dup {
			return nil, fmt.Errorf("installer[%d] %q: the same id as installer[%d]", i, in.ID, j)
		}
		index[in.ID] = i
		for _, ref := range slices.Sorted(maps.Keys(in.Servers)) {
			port := in.Servers[ref].Port
			if _, err := ParsePort(port); err != nil {
				return nil, fmt.Errorf("installer[%d] %q: servers[%q].port %q: %w", i, in.ID, ref, port, err)
			}
		}
	}
	for i, in := range ins {
		for k, dep := range in.Dependencies {
			id, _, _ := strings.Cut(dep, ":") // "id" or "id:version"
			j, ok := index[id]
			switch {
			case !ok:
				return nil, fmt.Errorf("installer[%d] %q: dependencies[%d] %q: no such installer in the config", i, in.ID, k, dep)
			case j == i:
				return nil, fmt.Errorf("installer[%d] %q: dependencies[%d] %q: depends on itself", i, in.ID, k, dep)
			case j > i:
				return nil, fmt.Errorf("installer[%d] %q: dependencies[%d] %q: listed after it, as installer[%d]; installers run in file order, so a dependency must come first", i, in.ID, k, dep, j)
			}
		}
	}
	return ins, nil
}

// jsonError turns a decoding error into one that says where: the line and
// column of a syntax error, the field and types of a type error.
func jsonError(data []byte, err error, want string) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := position(data, se.Offset)
		return fmt.Errorf("invalid JSON at line %d, column %d: %v", line, col, se)
	case errors.As(err, &te) && te.Field != "":
		return fmt.Errorf("%s: got a JSON %s, want %s", te.Field, te.Value, jsonKind(te.Type.Kind().String()))
	case errors.As(err, &te):
		return fmt.Errorf("got a JSON %s, %s", te.Value, want)
	}
	return err
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return goKind
}

// position returns the 1-based line and column of byte offset off.
func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, max(col, 1)
}
