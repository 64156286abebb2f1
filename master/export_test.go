package master

import "time"

// SetAgentProbeTimeout sets how long a live tunnel has to answer when a
// second one arrives; call it before starting masters.
func SetAgentProbeTimeout(d time.Duration) { agentProbeTimeout = d }
