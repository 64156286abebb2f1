package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// maxHealthTimeout bounds -timeout: a probe that waits longer than the
// probing system does is useless.
const maxHealthTimeout = time.Minute

// runHealth is `porthole health [-url URL] [-timeout D]`: GET URL and exit
// 0 on a 200, else 1 with the reason. It is the liveness probe of images
// without curl (the copier's and the master's are FROM scratch; an
// injected container has /porthole/bin/porthole).
func runHealth(ctx context.Context, args []string, stdout, stderr *os.File) error {
	fs := newFlagSet("health", stderr)
	u := fs.String("url", "http://127.0.0.1:4444/healthz", "health URL to GET (the agent's or porthole-master's /healthz)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long (at most 1m)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("health takes no arguments; got %q", fs.Args())}
	}
	if *timeout <= 0 || *timeout > maxHealthTimeout {
		return usageError{fmt.Sprintf("-timeout %s: must be > 0 and at most %s", *timeout, maxHealthTimeout)}
	}
	pu, err := url.Parse(*u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return usageError{fmt.Sprintf("-url %q: want http://HOST:PORT/PATH or https://…", *u)}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pu.String(), nil)
	if err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("health %s: %w", pu.Redacted(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health %s: %s %q", pu.Redacted(), resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}
