package mastercli

import "net/http"

// webHandler serves the dashboard (master/dashboard).
func webHandler() http.Handler { return nil }
