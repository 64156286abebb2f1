package agent

// RoutePatterns returns the pattern of every endpoint Handler serves.
func (a *Agent) RoutePatterns() []string {
	var ps []string
	for _, r := range a.routes() {
		ps = append(ps, r.pattern)
	}
	return ps
}
