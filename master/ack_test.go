package master_test

import (
	"context"
	"testing"

	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// A reconnected bootstrapper that resends only events the master already
// stored, then pings, gets its pong (everything before the ping is
// durable: it was before), and the master then shuts down at once. The
// ping used to wait for a commit generation with nothing in it, which
// nothing ever committed: no pong, and Shutdown waited for its deadline.
func TestPingAfterDuplicatesIsAnswered(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid, name = "w:e:o", "m"
	token, client := tm.machineToken(t, rid, name), tm.clientToken(t)
	sub := subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: rid})
	connected := func(want bool) func(map[string]*masterapi.Machine, map[string][]masterapi.Entry) bool {
		return func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
			m := ms[rid+"/"+name]
			return m != nil && m.Bootstrapper.Connected == want
		}
	}

	first := push(t, tm, token)
	for seq := 1; seq <= 3; seq++ {
		first.send(logEvent(name, rid, "b1", seq, "line"))
	}
	first.ack()
	first.ws.Close()
	sub.until(t, "the first connection to be gone", connected(false))

	// The reconnection: once its connection is committed, nothing is
	// pending, and everything it sends was stored before.
	again := push(t, tm, token)
	sub.until(t, "the second connection to be recorded", connected(true))
	for seq := 1; seq <= 3; seq++ {
		again.send(logEvent(name, rid, "b1", seq, "line"))
	}
	again.ack()
	if got := texts(logs(t, tm, client, rid, name)); len(got) != 3 {
		t.Errorf("journal: %q, want the 3 lines once", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tm.Shutdown(ctx); err != nil {
		t.Errorf("shutdown with a bootstrapper connected after duplicates: %v", err)
	}
}
