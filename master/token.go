package master

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token kinds.
const (
	// KindMachine: a machine's bootstrapper and agent push and register
	// as that machine (runtime id and machine name in the claims) and
	// nothing else.
	KindMachine = "machine"
	// KindClient: a user (the dashboard, the CLI, scripts) reads every
	// runtime and opens terminals.
	KindClient = "client"
	// KindTicket: a client's short-lived stand-in, for WebSocket URLs
	// (browsers cannot set headers on WebSockets); see TicketTTL.
	KindTicket = "ticket"
	// KindSite: the key of a browser's visit to a machine's server
	// through the master (ports.go): one port of one machine, for
	// SiteKeyTTL, in the path of the server's URLs; see SiteKey.
	KindSite = "site"
)

// TicketTTL is how long a ticket is valid. A ticket is also single-use:
// the master accepts it once (see tickets).
const TicketTTL = 60 * time.Second

// SiteKeyTTL is how long a site key is valid (SiteKey): a working
// session on a machine's server; the dashboard's link gives a new one.
// Revoking the token it was issued to ends it at once.
const SiteKeyTTL = 4 * time.Hour

const issuer = "porthole-master"

// keyFile is the signing key's name in the data directory.
const keyFile = "signing.key"

// Claims are what a porthole-master token says: its kind and, for a
// machine token, which machine.
type Claims struct {
	Kind    string `json:"kind"`
	Runtime string `json:"rid,omitempty"`
	Machine string `json:"mn,omitempty"`
	// Name is who the token stands for (token -name; a machine token's
	// is RUNTIME/MACHINE), the principal of the logs and the audit trail.
	Name string `json:"name,omitempty"`
	// Parent is, on a ticket, the id of the token it was issued to:
	// revoking that token revokes its tickets too; ParentExpires is when
	// that token expires, which ends the connections the ticket opened.
	Parent        string           `json:"parent,omitempty"`
	ParentExpires *jwt.NumericDate `json:"pexp,omitempty"`
	// Port is, on a site key, the machine's port it opens (Runtime and
	// Machine say which machine).
	Port int `json:"port,omitempty"`
	jwt.RegisteredClaims
}

// Principal is who c stands for, for logs and the audit trail: its name,
// else its kind (tokens minted before names).
func (c *Claims) Principal() string {
	if c.Name != "" {
		return c.Name
	}
	return c.Kind + " token"
}

// revocable is the id that revokes c: its own, or a ticket's parent's.
func (c *Claims) revocable() string {
	if c.Parent != "" {
		return c.Parent
	}
	return c.ID
}

// Signer issues and verifies tokens (JWT, HS256) with the key kept in the
// data directory.
type Signer struct {
	key []byte
}

// LoadSigner reads dir/signing.key, creating it (32 random bytes, mode
// 0600) when missing.
func LoadSigner(dir string) (*Signer, error) {
	path := filepath.Join(dir, keyFile)
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		rand.Read(key)
		if err := writeKey(path, key); err != nil {
			// Another process may have created it first: use theirs.
			if k, rerr := os.ReadFile(path); rerr == nil && len(k) == 32 {
				return &Signer{key: k}, nil
			}
			return nil, err
		}
		return &Signer{key: key}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("signing key %s: %d bytes, want 32 (delete it to make a new one; every token then changes)", path, len(key))
	}
	return &Signer{key: key}, nil
}

// ErrNoSigningKey is ReadSigner's error when the data directory holds no
// signing key.
var ErrNoSigningKey = errors.New("no signing key")

// ReadSigner reads dir/signing.key, which must exist: unlike LoadSigner
// it never creates one, so a mistyped directory is an error
// (ErrNoSigningKey) rather than a new key whose tokens no master accepts.
func ReadSigner(dir string) (*Signer, error) {
	path := filepath.Join(dir, keyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoSigningKey, path)
	}
	return LoadSigner(dir)
}

// writeKey creates path exclusively, durably.
func writeKey(path string, key []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("signing key %s: %w", path, err)
	}
	return nil
}

// Default lifetimes of Issue (porthole-master token -ttl).
const (
	DefaultClientTTL  = 30 * 24 * time.Hour
	DefaultMachineTTL = 365 * 24 * time.Hour
)

// IssueOptions say what token to issue.
type IssueOptions struct {
	Kind             string // KindClient or KindMachine
	Runtime, Machine string // a machine token's
	Name             string // a client token's principal ("" : "unnamed"); a machine's is RUNTIME/MACHINE
	TTL              time.Duration
	Now              time.Time // zero: time.Now()
}

// Issue returns a new token with a fresh id, and its record for the
// token registry (registry.go; never the token itself).
func (s *Signer) Issue(o IssueOptions) (string, TokenRecord, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	c := Claims{Kind: o.Kind, Name: o.Name}
	switch o.Kind {
	case KindMachine:
		if o.Runtime == "" || o.Machine == "" {
			return "", TokenRecord{}, errors.New("a machine token needs a runtime id and a machine name")
		}
		if err := checkKey(o.Runtime, o.Machine); err != nil {
			return "", TokenRecord{}, err
		}
		c.Runtime, c.Machine, c.Name = o.Runtime, o.Machine, o.Runtime+"/"+o.Machine
	case KindClient:
		if c.Name == "" {
			c.Name = "unnamed"
		}
		if err := checkName(c.Name); err != nil {
			return "", TokenRecord{}, err
		}
	default:
		return "", TokenRecord{}, fmt.Errorf("cannot issue a %q token", o.Kind)
	}
	c.ID = rand.Text()
	rec := TokenRecord{ID: c.ID, Name: c.Name, Kind: c.Kind, Runtime: c.Runtime, Machine: c.Machine, Issued: o.Now.UTC()}
	if o.TTL > 0 {
		exp := o.Now.Add(o.TTL)
		c.ExpiresAt = jwt.NewNumericDate(exp)
		e := exp.UTC()
		rec.Expires = &e
	}
	tok, err := s.signAt(c, o.Now)
	return tok, rec, err
}

// MachineToken returns a token for the machine name of runtime rid, with
// no expiry (tests and embedders; the command issues with Issue).
func (s *Signer) MachineToken(rid, name string) (string, error) {
	tok, _, err := s.Issue(IssueOptions{Kind: KindMachine, Runtime: rid, Machine: name})
	return tok, err
}

// ClientToken returns a client token with no expiry (tests and embedders).
func (s *Signer) ClientToken() (string, error) {
	tok, _, err := s.Issue(IssueOptions{Kind: KindClient})
	return tok, err
}

// Ticket returns a ticket valid for TicketTTL from now, issued to the
// client token parent: it carries its name, and revoking parent revokes
// it.
func (s *Signer) Ticket(now time.Time, parent *Claims) (string, time.Time, error) {
	exp := now.Add(TicketTTL)
	c := Claims{Kind: KindTicket, Name: parent.Name, Parent: parent.revocable(), ParentExpires: parent.ExpiresAt}
	c.ExpiresAt = jwt.NewNumericDate(exp)
	c.ID = rand.Text() // single use: the master remembers it until it expires
	tok, err := s.signAt(c, now)
	return tok, exp, err
}

// SiteKey returns a site key for port of machine name of runtime rid,
// issued to c (a client token or a ticket): valid for SiteKeyTTL from now
// and never after c's token expires, carrying its name, revoked with it.
func (s *Signer) SiteKey(now time.Time, c *Claims, rid, name string, port int) (string, time.Time, error) {
	pexp := c.ExpiresAt
	if c.Kind == KindTicket || c.Kind == KindSite {
		pexp = c.ParentExpires
	}
	exp := now.Add(SiteKeyTTL)
	if pexp != nil && pexp.Time.Before(exp) {
		exp = pexp.Time
	}
	k := Claims{Kind: KindSite, Name: c.Name, Parent: c.revocable(), ParentExpires: pexp, Runtime: rid, Machine: name, Port: port}
	k.ExpiresAt = jwt.NewNumericDate(exp)
	k.ID = rand.Text()
	tok, err := s.signAt(k, now)
	return tok, exp, err
}

func (s *Signer) signAt(c Claims, now time.Time) (string, error) {
	c.Issuer = issuer
	c.IssuedAt = jwt.NewNumericDate(now)
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.key)
}

// Verify checks a token's signature, issuer and expiry and returns its
// claims. Errors never contain the token.
func (s *Signer) Verify(tok string) (*Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(strings.TrimSpace(tok), &c, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithIssuer(issuer))
	if err != nil {
		return nil, fmt.Errorf("invalid token: %w", err)
	}
	switch c.Kind {
	case KindMachine:
		if c.Runtime == "" || c.Machine == "" {
			return nil, errors.New("invalid token: a machine token without runtime id or machine name")
		}
		if err := checkKey(c.Runtime, c.Machine); err != nil {
			return nil, fmt.Errorf("invalid token: %w", err)
		}
	case KindClient:
	case KindTicket:
		if c.ExpiresAt == nil || c.ID == "" {
			return nil, errors.New("invalid token: a ticket without expiry or id")
		}
	case KindSite:
		if c.ExpiresAt == nil || c.Runtime == "" || c.Machine == "" || c.Port < 1 || c.Port > 65535 {
			return nil, errors.New("invalid token: a site key without expiry, machine or port")
		}
	default:
		return nil, fmt.Errorf("invalid token: unknown kind %q", c.Kind)
	}
	return &c, nil
}
