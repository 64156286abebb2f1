package master

import "time"

// SetAgentProbeTimeout sets how long a live tunnel has to answer when a
// second one arrives; call it before starting masters.
func SetAgentProbeTimeout(d time.Duration) { agentProbeTimeout = d }

// RoutePatterns returns the pattern of every endpoint Handler serves.
func (m *Master) RoutePatterns() []string {
	var ps []string
	for _, r := range m.routes() {
		ps = append(ps, r.pattern)
	}
	return ps
}
