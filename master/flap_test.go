package master_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// A bootstrapper connection that comes and goes costs the master little:
// the machine's document is written, and its subscribers notified, only
// when its state changes and at most once a second. Every flap used to
// rewrite and fsync the document and notify every subscriber (2,949
// notifications to one dashboard in 12 s of a reconnection loop).
func TestFlappingConnectionCoalesced(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid, name = "w:e:o", "m"
	token := tm.machineToken(t, rid, name)
	h := http.Header{"Authorization": {token}}
	sub := subscribe(t, tm, tm.clientToken(t), masterapi.SubscribeParams{RuntimeID: "*"})
	connected := func(want bool) func(map[string]*masterapi.Machine, map[string][]masterapi.Entry) bool {
		return func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
			m := ms[rid+"/"+name]
			return m != nil && m.Bootstrapper.Connected == want
		}
	}
	notes := func() int {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.notes
	}
	flap := func(n int) {
		for range n {
			p, resp, err := dialPush(t, tm, "/api/websocket-minor", h)
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			p.ws.Close() // abruptly, as a dropped link
			<-p.readErr
		}
	}

	// While the status connection stays up, the logs connection's flaps
	// change nothing a subscriber sees.
	stay := push(t, tm, token)
	sub.until(t, "the machine connected", connected(true))
	before := notes()
	flap(100)
	stay.send(logEvent(name, rid, "b", 1, "marker")) // an entry, to know the flaps were all read
	stay.ack()
	sub.until(t, "the marker", func(_ map[string]*masterapi.Machine, es map[string][]masterapi.Entry) bool {
		return len(es[rid+"/"+name]) > 0
	})
	if n := notes() - before; n != 0 {
		t.Errorf("100 flaps of a second connection: %d machine notifications; want 0 (the machine stayed connected)", n)
	}
	stay.ws.Close()
	<-stay.readErr

	// A lone connection that flaps: at most one notification a second,
	// and the last state arrives.
	sub.until(t, "the machine disconnected", connected(false))
	before = notes()
	began := time.Now()
	flap(200)
	elapsed := time.Since(began)
	sub.until(t, "the machine disconnected after the flaps", connected(false))
	// Settled: the state the last flap left is written within connEvery.
	settle := time.Now()
	for time.Since(settle) < 1500*time.Millisecond {
		sub.mu.Lock()
		ch := sub.changed
		sub.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(1500*time.Millisecond - time.Since(settle)):
		}
	}
	n := notes() - before
	if limit := 2 + 2*int(elapsed.Seconds()+1.5); n > limit {
		t.Errorf("200 flaps in %s: %d machine notifications; want at most %d (one a second)", elapsed.Round(time.Millisecond), n, limit)
	}
	t.Logf("200 flaps in %s: %d machine notifications", elapsed.Round(time.Millisecond), n)
	// A connection that stays after the flaps is shown (within connEvery).
	push(t, tm, token)
	sub.until(t, "the machine connected again", connected(true))
}
