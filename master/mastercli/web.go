package mastercli

import (
	"net/http"

	"github.com/porthole-dev/porthole/master/dashboard"
)

// webHandler serves the dashboard (master/dashboard).
func webHandler() http.Handler { return dashboard.Handler() }
