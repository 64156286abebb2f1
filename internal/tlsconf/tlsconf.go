// Package tlsconf builds porthole's TLS configurations: a server's, whose
// certificate is reloaded when its files change (so that a rotation by
// cert-manager or an operator needs no restart), and a client's, which
// trusts extra CA certificates beside the system's.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Reloader serves a certificate and its key from two PEM files, reloaded
// when either file's modification time or size changes. The files are
// looked at on a handshake at most once per CheckEvery. A pair that does
// not load (say, the certificate written and the key not yet) keeps the
// previous one in service, and is tried again at the next check; the
// failure is logged once per change.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp // of the pair in service, or of the last failed one
	checkedAt time.Time
}

// CheckEvery is how often, at most, a Reloader looks at its files.
const CheckEvery = time.Second

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{st.ModTime(), st.Size()}, nil
}

// NewReloader loads the pair at once: an error names the file at fault.
// log (nil: slog.Default) gets the reloads.
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("a certificate needs both -tls-cert and -tls-key")
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	stamp, cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.stamp, r.checkedAt = cert, stamp, r.now()
	return r, nil
}

func (r *Reloader) load() ([2]fileStamp, *tls.Certificate, error) {
	var stamp [2]fileStamp
	var err error
	if stamp[0], err = stampOf(r.certFile); err != nil {
		return stamp, nil, fmt.Errorf("-tls-cert %s: %w", r.certFile, err)
	}
	if stamp[1], err = stampOf(r.keyFile); err != nil {
		return stamp, nil, fmt.Errorf("-tls-key %s: %w", r.keyFile, err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return stamp, nil, fmt.Errorf("-tls-cert %s, -tls-key %s: %w", r.certFile, r.keyFile, err)
	}
	return stamp, &cert, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checkedAt) >= CheckEvery {
		r.checkedAt = now
		r.reload()
	}
	return r.cert, nil
}

// reload loads the pair again when its files changed; mu held.
func (r *Reloader) reload() {
	c, errC := stampOf(r.certFile)
	k, errK := stampOf(r.keyFile)
	if errC == nil && errK == nil && [2]fileStamp{c, k} == r.stamp {
		return
	}
	stamp, cert, err := r.load()
	if stamp == r.stamp && err != nil {
		return // the same failure as last time: logged already
	}
	r.stamp = stamp
	if err != nil {
		r.log.Error("TLS certificate not reloaded: the previous one stays in service", "err", err)
		return
	}
	r.cert = cert
	r.log.Info("TLS certificate reloaded", "cert", r.certFile, "not_after", cert.Leaf.NotAfter)
}

// Server returns a server configuration that serves r's certificate.
func Server(r *Reloader) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// Client returns a client configuration that trusts the PEM certificates
// in caFile beside the system's roots; nil when caFile is "" (the
// system's roots only).
func Client(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate found")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
