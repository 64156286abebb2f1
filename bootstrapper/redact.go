package bootstrapper

import (
	"net/url"
	"strings"
)

// redactURL is u as logs show it: the value of every query parameter
// whose name holds "token" (Che's push endpoints carry ?token=...) and a
// password in the userinfo replaced by "xxxxx". A URL that does not parse
// is shown as "(unparsable URL)", since where its secret is is unknown.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if p.RawQuery != "" {
		q := p.Query()
		changed := false
		for k := range q {
			if strings.Contains(strings.ToLower(k), "token") {
				q[k] = []string{"xxxxx"}
				changed = true
			}
		}
		if changed {
			p.RawQuery = q.Encode()
		}
	}
	return p.Redacted()
}
