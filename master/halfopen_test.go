package master_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// A bootstrapper that closes normally after DONE stops its machine even
// when a connection of its that a fault left half-open (its FIN was lost
// in a partition) is reaped after that, with an error: the machine used
// to stay RUNNING for good, because only the last connection to end
// decided (found by faults.TestPartition with the default -ping).
func TestHalfOpenConnectionReapedAfterStop(t *testing.T) {
	var log testutil.SyncBuffer
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) {
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	const rid, name = "w:e:o", "m"
	token := tm.machineToken(t, rid, name)
	sub := subscribe(t, tm, tm.clientToken(t), masterapi.SubscribeParams{RuntimeID: rid})

	stale, resp, err := dialPush(t, tm, "/api/websocket-minor", http.Header{"Authorization": {token}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	status := push(t, tm, token)
	status.send(`{"jsonrpc":"2.0","method":"` + che.MethodBootstrapperStatus + `","params":{"machineName":"m","runtimeId":{"workspaceId":"w","envName":"e","ownerId":"o"},"time":"2026-11-22T10:00:01Z","status":"` + che.StatusDone + `","bootId":"b","seq":1}}`)
	status.ack()
	sub.until(t, "RUNNING", func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
		m := ms[rid+"/"+name]
		return m != nil && m.Status == masterapi.MachineRunning
	})

	// The bootstrapper is done: its connection closes normally…
	status.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bootstrapper done"), time.Now().Add(wait))
	testutil.WaitFor(t, "the normal close recorded", func() bool {
		return strings.Contains(log.String(), `msg="bootstrapper disconnected"`)
	})
	// …then the master reaps the half-open one.
	stale.ws.UnderlyingConn().Close()
	sub.until(t, "no bootstrapper connected", func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
		return !ms[rid+"/"+name].Bootstrapper.Connected
	})
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if m := sub.machines[rid+"/"+name]; m.Status != masterapi.MachineStopped {
		t.Fatalf("machine %s once its last connection was reaped; want %s (its bootstrapper closed normally after DONE)", m.Status, masterapi.MachineStopped)
	}
}
