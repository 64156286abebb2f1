// Package dashboard serves porthole-master's web dashboard: the page
// built from web/dashboard (npm run build, or make web) into dist/, which
// is embedded in the binary. The build needs node and npm; the Go build
// does not: dist/ holds only a committed placeholder until the page is
// built, and the dashboard then answers with a page that says how to
// build it.
package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// dist is web/dashboard's build output (and the placeholder .keep).
//
//go:embed all:dist
var dist embed.FS

// Security headers of every answer. The page is same-origin only: it
// talks to /api/ (fetch and WebSockets), and xterm.js sets inline styles.
var headers = map[string]string{
	"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; " +
		"style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"X-Frame-Options":        "DENY",
}

// Handler serves the dashboard: the built page, or, when it was not
// built, a page saying how to build it. It answers GET and HEAD, and 405
// to other methods, so it can be registered for every method at "/".
func Handler() http.Handler {
	files, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed pattern guarantees dist exists
	}
	return newHandler(files)
}

// getOnly answers 405 to methods other than GET and HEAD.
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method "+r.Method+" not allowed: the dashboard's pages answer GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Built reports whether the binary holds the built dashboard.
func Built() bool {
	_, err := fs.Stat(dist, "dist/index.html")
	return err == nil
}

func newHandler(files fs.FS) http.Handler {
	if _, err := fs.Stat(files, "index.html"); err != nil {
		return getOnly(http.HandlerFunc(serveNotBuilt))
	}
	etags := map[string]string{} // path without the leading "/" → ETag
	fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags[p] = `"` + hex.EncodeToString(sum[:12]) + `"`
		return nil
	})
	fileServer := http.FileServerFS(files)
	return getOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setHeaders(w)
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		if name == "" || strings.HasSuffix(r.URL.Path, "/") {
			name = path.Join(name, "index.html")
		}
		if path.Base(name) == ".keep" {
			http.NotFound(w, r)
			return
		}
		// Embedded files have no modification time: an ETag from their
		// content lets browsers revalidate (no-cache) cheaply.
		if tag, ok := etags[name]; ok {
			w.Header().Set("ETag", tag)
			w.Header().Set("Cache-Control", "no-cache")
		}
		fileServer.ServeHTTP(w, r)
	}))
}

func setHeaders(w http.ResponseWriter) {
	for k, v := range headers {
		w.Header().Set(k, v)
	}
}

// notBuilt is the page of a binary built without the dashboard.
const notBuilt = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>porthole-master: dashboard not built</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em}code{background:#eee;padding:0 .2em}</style>
</head>
<body>
<h1>porthole-master</h1>
<p>The web dashboard's assets are not built into this binary. It was built
without node and npm, so the page (<code>web/dashboard</code>) could not be
bundled.</p>
<p>To build it, install node and npm, then in the repository run
<code>make web</code> (the pages only) or <code>make build</code> (the pages,
then the binaries), and rebuild porthole-master.</p>
<p>Everything else works: the JSON API (for example
<a href="/api/runtimes"><code>GET /api/runtimes</code></a> with
<code>Authorization: Bearer</code> and a client token from
<code>porthole-master token -data DIR -client</code>), the JSON-RPC
subscriptions at <code>/api/rpc</code>, and the agents' terminals; see
docs/master.md.</p>
</body>
</html>
`

func serveNotBuilt(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" && r.URL.Path != "/index.html" {
		http.NotFound(w, r)
		return
	}
	setHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(notBuilt))
}
