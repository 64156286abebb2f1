package agent

import (
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// webHandler serves the static pages in dir (Options.WebDir) and nothing
// else: the files are opened through an os.Root, so a symbolic link that
// leads out of dir is refused; a name with a path element starting with
// "." (.git, .env) is not served; and a directory is served only through
// its index.html, never listed. Everything refused is a plain 404. The
// root is opened at each request, so the directory may be replaced while
// the agent runs.
func webHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := path.Clean("/" + r.URL.Path)
		for _, elem := range strings.Split(name, "/") {
			if strings.HasPrefix(elem, ".") {
				http.NotFound(w, r)
				return
			}
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			http.Error(w, "web directory unavailable", http.StatusInternalServerError)
			return
		}
		defer root.Close()
		fsys := root.FS()
		rel := strings.TrimPrefix(name, "/")
		if rel == "" {
			rel = "."
		}
		fi, err := fs.Stat(fsys, rel)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if fi.IsDir() {
			if _, err := fs.Stat(fsys, path.Join(rel, "index.html")); err != nil {
				http.NotFound(w, r)
				return
			}
		}
		http.FileServerFS(fsys).ServeHTTP(w, r)
	})
}
