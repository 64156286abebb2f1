package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/tlsconf"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// Contexts: named servers (an agent or a porthole-master) with their
// token, kept in $XDG_CONFIG_HOME/porthole/config.json (default
// ~/.config/porthole), mode 0600, so commands need no -url or token.

// Context kinds.
const (
	kindAgent  = "agent"
	kindMaster = "master"
)

// savedContext is one named server.
type savedContext struct {
	URL  string `json:"url"`
	Kind string `json:"kind"` // kindAgent or kindMaster
	// Token is kept in the file (mode 0600) unless TokenFile names where
	// it is read from at each use.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"tokenFile,omitempty"`
	// CA is a PEM file of the certificate authorities to trust for wss
	// and https, besides the system's.
	CA string `json:"ca,omitempty"`
}

type config struct {
	Current  string                   `json:"current,omitempty"`
	Contexts map[string]*savedContext `json:"contexts"`
}

// configPath is the config file: $XDG_CONFIG_HOME/porthole/config.json,
// else $HOME/.config/porthole/config.json.
func configPath(e env) (string, error) {
	dir := e["XDG_CONFIG_HOME"]
	if dir == "" {
		if e["HOME"] == "" {
			return "", errors.New("no config directory: set $XDG_CONFIG_HOME or $HOME")
		}
		dir = filepath.Join(e["HOME"], ".config")
	}
	return filepath.Join(dir, "porthole", "config.json"), nil
}

// loadConfig reads the config; a missing file is an empty config. A file
// others may read is refused: it holds tokens.
func loadConfig(e env) (*config, string, error) {
	p, err := configPath(e)
	if err != nil {
		return nil, "", err
	}
	c := &config{Contexts: map[string]*savedContext{}}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, p, nil
	}
	if err != nil {
		return nil, p, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, p, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, p, fmt.Errorf("%s holds tokens and others may read it (mode %04o): chmod 600 %s", p, fi.Mode().Perm(), p)
	}
	if err := json.NewDecoder(f).Decode(c); err != nil {
		return nil, p, fmt.Errorf("%s: %w", p, err)
	}
	if c.Contexts == nil {
		c.Contexts = map[string]*savedContext{}
	}
	return c, p, nil
}

// save writes the config atomically, mode 0600 in a 0700 directory.
func (c *config) save(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".config-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

func (c *config) names() []string {
	var ns []string
	for n := range c.Contexts {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func (c *config) get(name string) (*savedContext, error) {
	sc := c.Contexts[name]
	if sc == nil {
		known := "none; porthole login creates one"
		if len(c.Contexts) > 0 {
			known = strings.Join(c.names(), ", ")
		}
		return nil, fmt.Errorf("no context %q (known: %s)", name, known)
	}
	return sc, nil
}

// token returns the context's token.
func (sc *savedContext) token() (string, error) {
	if sc.TokenFile != "" {
		return readSecretFile("the context's token file", sc.TokenFile)
	}
	return sc.Token, nil
}

// tlsConfig trusts caFile's certificates besides the system's; nil
// without one.
func tlsConfig(caFile string) (*tls.Config, error) {
	conf, err := tlsconf.Client(caFile)
	if err != nil {
		return nil, fmt.Errorf("-cacert %s: %w", caFile, err)
	}
	return conf, nil
}

// server is where a command goes: a URL, its token, and how to trust it.
type server struct {
	url, token, kind, name string // name: the context's, if any
	tls                    *tls.Config
}

// httpBase is the server's base URL for plain HTTP.
func (s *server) httpBase() string {
	u := s.url
	for ws, h := range map[string]string{"ws://": "http://", "wss://": "https://"} {
		if strings.HasPrefix(u, ws) {
			u = h + strings.TrimPrefix(u, ws)
		}
	}
	return strings.TrimSuffix(u, "/")
}

// getJSON GETs path on the server with its token into v.
func (s *server) getJSON(ctx context.Context, path string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", s.httpBase()+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: s.tls, Proxy: http.ProxyFromEnvironment}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("connect to %s: %w", s.httpBase(), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		var me masterapi.Error
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &me) == nil && me.Error != "" {
			msg = me.Error
		}
		return resp.StatusCode, fmt.Errorf("%s: %d %s: %s", s.httpBase()+path, resp.StatusCode, http.StatusText(resp.StatusCode), msg)
	}
	return resp.StatusCode, json.Unmarshal(b, v)
}

// resolve finds the server the flags, the environment and the config
// name, in this order: -url (with -token-file or $PORTHOLE_TOKEN);
// -context or $PORTHOLE_CONTEXT; $PORTHOLE_URL (with the token as for
// -url); the current context; ws://127.0.0.1:4444. A context's token is
// its own unless -token-file is given.
func (f *clientFlags) resolve(e env) (*server, error) {
	envToken := func() (string, error) { return readToken(f.tokenFile, e) }
	if f.url != "" || (f.context == "" && e["PORTHOLE_CONTEXT"] == "" && e["PORTHOLE_URL"] != "") {
		u := f.url
		if u == "" {
			u = e["PORTHOLE_URL"]
		}
		tok, err := envToken()
		if err != nil {
			return nil, err
		}
		conf, err := tlsConfig(f.cacert)
		return &server{url: u, token: tok, tls: conf}, err
	}
	cfg, _, err := loadConfig(e)
	if err != nil {
		return nil, err
	}
	name := f.context
	if name == "" {
		name = e["PORTHOLE_CONTEXT"]
	}
	if name == "" {
		name = cfg.Current
	}
	if name == "" {
		tok, err := envToken()
		if err != nil {
			return nil, err
		}
		conf, err := tlsConfig(f.cacert)
		return &server{url: "ws://127.0.0.1:4444", token: tok, tls: conf}, err
	}
	sc, err := cfg.get(name)
	if err != nil {
		return nil, err
	}
	s := &server{url: sc.URL, kind: sc.Kind, name: name}
	if f.tokenFile != "" {
		s.token, err = readToken(f.tokenFile, e)
	} else {
		s.token, err = sc.token()
	}
	if err != nil {
		return nil, err
	}
	ca := sc.CA
	if f.cacert != "" {
		ca = f.cacert
	}
	if s.tls, err = tlsConfig(ca); err != nil {
		return nil, fmt.Errorf("context %q: %w", name, err)
	}
	return s, nil
}

// machineURL turns a master server and -m into the machine's agent URL
// on the master, checking that the machine exists.
func machineURL(ctx context.Context, s *server, spec string) (string, error) {
	rid, name, hasRuntime := strings.Cut(spec, "/")
	if !hasRuntime {
		rid, name = "", spec
	}
	if name == "" || (hasRuntime && rid == "") || strings.Contains(name, "/") {
		return "", usageError{fmt.Sprintf("-m %q: want RUNTIME/MACHINE or MACHINE", spec)}
	}
	var rts []*masterapi.Runtime
	if _, err := s.getJSON(ctx, "/api/runtimes", &rts); err != nil {
		return "", err
	}
	var all, matches []string
	var runtimes []string
	for _, rt := range rts {
		runtimes = append(runtimes, rt.ID)
		for _, m := range rt.Machines {
			all = append(all, rt.ID+"/"+m.Name)
			if m.Name == name && (rid == "" || rt.ID == rid) {
				matches = append(matches, rt.ID)
			}
		}
	}
	known := func(l []string) string {
		if len(l) == 0 {
			return "none"
		}
		return strings.Join(l, ", ")
	}
	switch {
	case hasRuntime && !slices.Contains(runtimes, rid):
		return "", fmt.Errorf("no runtime %s (known: %s)", rid, known(runtimes))
	case hasRuntime && len(matches) == 0:
		var inRuntime []string
		for _, m := range all {
			if r, n, _ := strings.Cut(m, "/"); r == rid {
				inRuntime = append(inRuntime, n)
			}
		}
		return "", fmt.Errorf("no machine %s in runtime %s (known: %s)", name, rid, known(inRuntime))
	case len(matches) == 0:
		return "", fmt.Errorf("no machine %s (known: %s)", name, known(all))
	case len(matches) > 1:
		return "", fmt.Errorf("machine %s is in several runtimes (%s): say which with -m RUNTIME/%s", name, strings.Join(matches, ", "), name)
	}
	return strings.TrimSuffix(s.url, "/") + "/api/runtimes/" + url.PathEscape(matches[0]) + "/machines/" + url.PathEscape(name) + "/agent", nil
}

// options resolve the server and, for a master, the machine (-m) into
// the client's options, once (later calls return the same); f.url
// becomes the agent's URL.
func (f *clientFlags) options(ctx context.Context, e env) (client.Options, error) {
	if f.resolved != nil {
		return *f.resolved, nil
	}
	s, err := f.resolve(e)
	if err != nil {
		return client.Options{}, err
	}
	u := s.url
	switch {
	case f.machine != "" && s.kind == kindAgent:
		return client.Options{}, fmt.Errorf("-m %s: context %q is an agent, not a porthole-master", f.machine, s.name)
	case f.machine != "":
		if u, err = machineURL(ctx, s, f.machine); err != nil {
			return client.Options{}, err
		}
	case s.kind == kindMaster:
		return client.Options{}, usageError{fmt.Sprintf("context %q is a porthole-master: name a machine with -m RUNTIME/MACHINE or -m MACHINE ('porthole machines' lists them)", s.name)}
	}
	f.url = u
	f.resolved = &client.Options{URL: u, Token: s.token, TLS: s.tls}
	return *f.resolved, nil
}

// runLogin is `porthole login -url URL [-token-file F] [-name N] [-cacert F]`.
func runLogin(ctx context.Context, args []string, e env, stdin *os.File, stdout, stderr *os.File) error {
	fs := newFlagSet("login", stderr)
	u := fs.String("url", "", "the agent's or porthole-master's URL (ws://, wss://, http:// or https://)")
	tokenFile := fs.String("token-file", "", "file holding the token, read at each use (default: $PORTHOLE_TOKEN, else a line of stdin, kept in the config)")
	name := fs.String("name", "", "the context's name (default: the URL's host)")
	ca := fs.String("cacert", "", "PEM certificate(s) trusted for wss/https beside the system's, kept in the context")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *u == "" || fs.NArg() > 0 {
		return usageError{"login needs -url and no arguments: porthole login -url URL [-token-file F] [-name N] [-cacert F]"}
	}
	pu, err := url.Parse(*u)
	if err != nil || pu.Host == "" || !slices.Contains([]string{"ws", "wss", "http", "https"}, pu.Scheme) {
		return usageError{fmt.Sprintf("-url %q: want ws://HOST[:PORT], wss://, http:// or https://", *u)}
	}
	pu.Scheme = map[string]string{"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}[pu.Scheme]
	sc := &savedContext{URL: strings.TrimSuffix(pu.String(), "/")}
	if *ca != "" {
		if sc.CA, err = filepath.Abs(*ca); err != nil {
			return err
		}
	}
	var tok string
	switch {
	case *tokenFile != "":
		if sc.TokenFile, err = filepath.Abs(*tokenFile); err != nil {
			return err
		}
		if tok, err = readSecretFile("-token-file", sc.TokenFile); err != nil {
			return err
		}
	case e["PORTHOLE_TOKEN"] != "":
		tok = e["PORTHOLE_TOKEN"]
	default:
		if tok, err = readTokenLine(stdin, stderr); err != nil {
			return err
		}
	}
	if sc.TokenFile == "" {
		sc.Token = tok
	}
	s := &server{url: sc.URL, token: tok}
	if s.tls, err = tlsConfig(sc.CA); err != nil {
		return err
	}
	if sc.Kind, err = probe(ctx, s); err != nil {
		return err
	}
	if *name == "" {
		*name = pu.Host
	}
	cfg, p, err := loadConfig(e)
	if err != nil {
		return err
	}
	cfg.Contexts[*name] = sc
	cfg.Current = *name
	if err := cfg.save(p); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "logged in to %s %s as context %q (now current)\n", sc.Kind, sc.URL, *name)
	return nil
}

// readTokenLine reads the token from stdin: without echo on a terminal.
func readTokenLine(stdin *os.File, stderr io.Writer) (string, error) {
	if term.IsTerminal(int(stdin.Fd())) {
		fmt.Fprint(stderr, "Token: ")
		b, err := term.ReadPassword(int(stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if tok := strings.TrimSpace(line); tok != "" {
		return tok, nil
	}
	if err != nil && err != io.EOF {
		return "", err
	}
	return "", errors.New("no token: give -token-file, set $PORTHOLE_TOKEN, or write it on stdin")
}

// probe tells a master (GET /api/info answers JSON) from an agent (its
// control socket answers), checking the token on the way.
func probe(ctx context.Context, s *server) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var info masterapi.Info
	status, merr := s.getJSON(ctx, "/api/info", &info)
	if merr == nil && info.ProtocolVersion != "" {
		return kindMaster, nil
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return "", fmt.Errorf("the porthole-master at %s refused the token: %v", s.url, merr)
	}
	c, err := client.Dial(ctx, client.Options{URL: s.url, Token: s.token, TLS: s.tls})
	if err != nil {
		return "", fmt.Errorf("%s is neither a porthole-master nor an agent that accepts the token: %w", s.url, err)
	}
	c.Close()
	return kindAgent, nil
}

// runContext is `porthole context list|use NAME|remove NAME`.
func runContext(args []string, e env, stdout, stderr *os.File) error {
	if len(args) == 0 {
		return usageError{"context needs a subcommand: porthole context list|use NAME|remove NAME"}
	}
	cfg, p, err := loadConfig(e)
	if err != nil {
		return err
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "list", "ls":
		if len(rest) > 0 {
			return usageError{"context list takes no arguments"}
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CURRENT\tNAME\tKIND\tURL")
		for _, n := range cfg.names() {
			cur := ""
			if n == cfg.Current {
				cur = "*"
			}
			sc := cfg.Contexts[n]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cur, n, sc.Kind, sc.URL)
		}
		return tw.Flush()
	case "use", "remove", "rm":
		if len(rest) != 1 {
			return usageError{fmt.Sprintf("context %s needs one context name", sub)}
		}
		if _, err := cfg.get(rest[0]); err != nil {
			return err
		}
		if sub == "use" {
			cfg.Current = rest[0]
		} else {
			delete(cfg.Contexts, rest[0])
			if cfg.Current == rest[0] {
				cfg.Current = ""
			}
		}
		return cfg.save(p)
	}
	return usageError{fmt.Sprintf("context %q: want list, use NAME or remove NAME", args[0])}
}

// runMachines is `porthole machines [-context C] [-o json]`: a master's
// machines with their status.
func runMachines(ctx context.Context, args []string, e env, stdout, stderr *os.File) error {
	fs := newFlagSet("machines", stderr)
	var cf clientFlags
	cf.register(fs, e)
	output := fs.String("o", "table", "output: table or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return usageError{fmt.Sprintf("-o %q: want table or json", *output)}
	}
	s, err := cf.resolve(e)
	if err != nil {
		return err
	}
	if s.kind == kindAgent {
		return fmt.Errorf("context %q is an agent: machines are a porthole-master's", s.name)
	}
	var rts []*masterapi.Runtime
	if _, err := s.getJSON(ctx, "/api/runtimes", &rts); err != nil {
		return err
	}
	if *output == "json" {
		var ms []*masterapi.Machine
		for _, rt := range rts {
			ms = append(ms, rt.Machines...)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ms)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUNTIME\tMACHINE\tSTATUS\tAGENT\tADDRESS")
	for _, rt := range rts {
		for _, m := range rt.Machines {
			agent := "not connected"
			if m.Agent.Connected {
				agent = "connected " + m.Agent.Version
			}
			status := m.Status
			if status == "" {
				status = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", rt.ID, m.Name, status, strings.TrimSpace(agent), m.Address)
		}
	}
	return tw.Flush()
}
