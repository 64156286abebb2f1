package master

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// The reducer without HTTP, disk or goroutines: each case applies one
// event to a machine document and checks the document and the entry.

var (
	t0  = time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)
	now = t0.Add(time.Minute)
)

func ev(f func(*che.Event)) *che.Event {
	e := &che.Event{MachineName: "dev", RuntimeID: che.RuntimeID{Workspace: "ws", Environment: "env", Owner: "me"}, Time: t0, BootID: "b1"}
	f(e)
	return e
}

// planned is a machine whose bootstrapper announced installer "web" with
// servers "http" (public) and "admin" (internal), and "tools" without.
func planned() *masterapi.Machine {
	return &masterapi.Machine{RuntimeID: "ws:env:me", Name: "dev", Status: masterapi.MachineStarting, BootID: "b1", Address: "10.0.0.7",
		Installers: []masterapi.Installer{{ID: "web", Status: masterapi.InstallerPending}, {ID: "tools", Status: masterapi.InstallerPending}},
		Servers: []masterapi.Server{
			{Name: "admin", Installer: "web", Port: "9000", Protocol: "ws", Attributes: map[string]string{"internal": "true"}, Status: masterapi.ServerUnknown, URL: "ws://10.0.0.7:9000"},
			{Name: "http", Installer: "web", Port: "8080/tcp", Protocol: "http", Path: "healthz", Status: masterapi.ServerUnknown, URL: "http://10.0.0.7:8080/healthz"},
		},
		Bootstrapper: masterapi.BootstrapperState{Status: che.StatusStarting},
	}
}

func with(d *masterapi.Machine, f func(*masterapi.Machine)) *masterapi.Machine {
	f(d)
	return d
}

func TestApply(t *testing.T) {
	cases := []struct {
		name    string
		doc     *masterapi.Machine
		method  string
		ev      *che.Event
		host    string
		wantDoc *masterapi.Machine
		want    masterapi.Entry
	}{
		{
			name:   "STARTING announces the plan",
			doc:    &masterapi.Machine{RuntimeID: "ws:env:me", Name: "dev", Status: masterapi.MachineFailed, Error: "old"},
			method: che.MethodBootstrapperStatus,
			ev: ev(func(e *che.Event) {
				e.Status = che.StatusStarting
				e.Installers = []che.PlanInstaller{
					{ID: "web", Servers: map[string]che.Server{
						"http":  {Port: "8080/tcp", Protocol: "http", Path: "healthz"},
						"admin": {Port: "9000", Protocol: "ws", Attributes: json.RawMessage(`{"internal":"true"}`)},
					}},
					{ID: "tools"},
				}
			}),
			host:    "10.0.0.7",
			wantDoc: planned(),
			want:    masterapi.Entry{Time: t0, Type: masterapi.EntryBootstrapper, Status: che.StatusStarting, BootID: "b1"},
		},
		{
			name:   "STARTING keeps the agent's address",
			doc:    with(planned(), func(d *masterapi.Machine) { d.Agent.Via = masterapi.ViaTunnel }),
			method: che.MethodBootstrapperStatus,
			ev:     ev(func(e *che.Event) { e.Status = che.StatusStarting; e.BootID = "b2" }),
			host:   "10.9.9.9",
			wantDoc: with(planned(), func(d *masterapi.Machine) {
				d.Agent.Via, d.BootID = masterapi.ViaTunnel, "b2"
			}),
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryBootstrapper, Status: che.StatusStarting, BootID: "b2"},
		},
		{
			name:    "DONE: the machine runs",
			doc:     with(planned(), func(d *masterapi.Machine) { d.Error = "stale" }),
			method:  che.MethodBootstrapperStatus,
			ev:      ev(func(e *che.Event) { e.Status = che.StatusDone }),
			wantDoc: with(planned(), func(d *masterapi.Machine) { d.Status, d.Bootstrapper.Status = masterapi.MachineRunning, che.StatusDone }),
			want:    masterapi.Entry{Time: t0, Type: masterapi.EntryBootstrapper, Status: che.StatusDone, BootID: "b1"},
		},
		{
			name:   "FAILED carries the error",
			doc:    planned(),
			method: che.MethodBootstrapperStatus,
			ev:     ev(func(e *che.Event) { e.Status, e.Error = che.StatusFailed, "boom" }),
			wantDoc: with(planned(), func(d *masterapi.Machine) {
				d.Status, d.Error, d.Bootstrapper.Status = masterapi.MachineFailed, "boom", che.StatusFailed
			}),
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryBootstrapper, Status: che.StatusFailed, Error: "boom", BootID: "b1"},
		},
		{
			name:   "installer RUNNING: its servers run",
			doc:    planned(),
			method: che.MethodInstallerStatus,
			ev:     ev(func(e *che.Event) { e.Installer, e.Status = "web", che.StatusRunning }),
			wantDoc: with(planned(), func(d *masterapi.Machine) {
				d.Installers[0].Status = che.StatusRunning
				d.Servers[0].Status, d.Servers[1].Status = masterapi.ServerRunning, masterapi.ServerRunning
			}),
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryInstaller, Installer: "web", Status: che.StatusRunning, BootID: "b1"},
		},
		{
			name:   "installer FAILED: its servers stop",
			doc:    planned(),
			method: che.MethodInstallerStatus,
			ev:     ev(func(e *che.Event) { e.Installer, e.Status, e.Error = "web", che.StatusFailed, "exit 1" }),
			wantDoc: with(planned(), func(d *masterapi.Machine) {
				d.Installers[0].Status, d.Installers[0].Error = che.StatusFailed, "exit 1"
				d.Servers[0].Status, d.Servers[1].Status = masterapi.ServerStopped, masterapi.ServerStopped
			}),
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryInstaller, Installer: "web", Status: che.StatusFailed, Error: "exit 1", BootID: "b1"},
		},
		{
			name:   "an installer the plan did not announce (Che's bootstrapper)",
			doc:    &masterapi.Machine{Name: "dev"},
			method: che.MethodInstallerStatus,
			ev:     ev(func(e *che.Event) { e.Installer, e.Status = "exec", che.StatusDone }),
			wantDoc: &masterapi.Machine{Name: "dev",
				Installers: []masterapi.Installer{{ID: "exec", Status: che.StatusDone}}},
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryInstaller, Installer: "exec", Status: che.StatusDone, BootID: "b1"},
		},
		{
			name:   "server STOPPED",
			doc:    planned(),
			method: che.MethodServerStatus,
			ev: ev(func(e *che.Event) {
				e.Installer, e.Server, e.Port, e.Status = "web", "http", "8080/tcp", che.StatusStopped
			}),
			wantDoc: with(planned(), func(d *masterapi.Machine) {
				d.Servers[1].Status = masterapi.ServerStopped
			}),
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryServer, Installer: "web", Status: che.StatusStopped, Server: "http", Port: "8080/tcp", BootID: "b1"},
		},
		{
			name:   "a server the plan did not announce",
			doc:    planned(),
			method: che.MethodServerStatus,
			ev: ev(func(e *che.Event) {
				e.Installer, e.Server, e.Port, e.Status = "tools", "debug", "5005", che.StatusRunning
			}),
			wantDoc: with(planned(), func(d *masterapi.Machine) {
				d.Servers = append(d.Servers, masterapi.Server{Name: "debug", Installer: "tools", Status: masterapi.ServerRunning})
			}),
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryServer, Installer: "tools", Status: che.StatusRunning, Server: "debug", Port: "5005", BootID: "b1"},
		},
		{
			name:   "a log line leaves the document alone",
			doc:    planned(),
			method: che.MethodInstallerLog,
			ev: ev(func(e *che.Event) {
				e.Installer, e.Text, e.Stream, e.Partial, e.Raw, e.Lost = "web", "caf\uFFFD", che.StreamStderr, true, []byte("caf\xe9"), 3
			}),
			wantDoc: planned(),
			want: masterapi.Entry{Time: t0, Type: masterapi.EntryLog, Installer: "web", Text: "caf\uFFFD", Stream: che.StreamStderr,
				Partial: true, Raw: []byte("caf\xe9"), Lost: 3, BootID: "b1"},
		},
		{
			name:    "an event without a time is stamped now",
			doc:     planned(),
			method:  che.MethodInstallerLog,
			ev:      ev(func(e *che.Event) { e.Time, e.Installer, e.Text, e.Stream = time.Time{}, "web", "x", che.StreamStdout }),
			wantDoc: planned(),
			want:    masterapi.Entry{Time: now, Type: masterapi.EntryLog, Installer: "web", Text: "x", Stream: che.StreamStdout, BootID: "b1"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := che.Validate(c.method, c.ev); err != nil {
				t.Fatalf("the case's event is invalid: %v", err)
			}
			got := apply(c.doc, c.method, c.ev, c.host, now)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("entry\n got %+v\nwant %+v", got, c.want)
			}
			if !reflect.DeepEqual(c.doc, c.wantDoc) {
				g, _ := json.Marshal(c.doc)
				w, _ := json.Marshal(c.wantDoc)
				t.Errorf("document\n got %s\nwant %s", g, w)
			}
		})
	}
}

// seen: an event is accepted once per boot, endpoint and seq; cursors of
// at most one other boot are kept.
func TestSeen(t *testing.T) {
	d := &masterapi.Machine{}
	steps := []struct {
		path, boot string
		seq        uint64
		want       bool
	}{
		{"/api/websocket", "b1", 1, false},
		{"/api/websocket", "b1", 2, false},
		{"/api/websocket", "b1", 2, true},
		{"/api/websocket", "b1", 1, true},
		{"/api/websocket-minor", "b1", 1, false}, // another endpoint, its own sequence
		{"/api/websocket", "b2", 1, false},       // a new boot
		{"/api/websocket", "", 0, false},         // Che's: never deduplicated
		{"/api/websocket", "", 0, false},
		{"/api/websocket", "b3", 1, false}, // a third boot: b1's and b2's cursors go
		{"/api/websocket", "b1", 3, false}, // so b1 starts over
	}
	for i, s := range steps {
		e := ev(func(e *che.Event) { e.BootID, e.Seq = s.boot, s.seq })
		if got := seen(d, s.path, e); got != s.want {
			t.Fatalf("step %d (%s %s %d): seen = %v, want %v; cursors %v", i, s.path, s.boot, s.seq, got, s.want, d.Cursors)
		}
	}
	want := map[string]uint64{"b3 /api/websocket": 1, "b1 /api/websocket": 3}
	if !reflect.DeepEqual(d.Cursors, want) {
		t.Errorf("cursors %v, want %v", d.Cursors, want)
	}
}

func TestConnections(t *testing.T) {
	running := func() *masterapi.Machine {
		return with(planned(), func(d *masterapi.Machine) {
			d.Status, d.Bootstrapper = masterapi.MachineRunning, masterapi.BootstrapperState{Connected: true, Status: che.StatusDone, Since: t0}
			d.Servers[0].Status, d.Servers[1].Status = masterapi.ServerRunning, masterapi.ServerRunning
		})
	}
	t.Run("the bootstrapper ends normally after DONE: stopped", func(t *testing.T) {
		d := running()
		bootstrapperConn(d, false, true, now)
		want := with(running(), func(w *masterapi.Machine) {
			w.Status, w.Bootstrapper.Connected, w.Bootstrapper.Since = masterapi.MachineStopped, false, now
			w.Servers[0].Status, w.Servers[1].Status = masterapi.ServerStopped, masterapi.ServerStopped
		})
		if !reflect.DeepEqual(d, want) {
			t.Errorf("got %+v\nwant %+v", d, want)
		}
	})
	t.Run("a broken connection is not a stop", func(t *testing.T) {
		d := running()
		bootstrapperConn(d, false, false, now)
		want := with(running(), func(w *masterapi.Machine) { w.Bootstrapper.Connected, w.Bootstrapper.Since = false, now })
		if !reflect.DeepEqual(d, want) {
			t.Errorf("got %+v\nwant %+v", d, want)
		}
	})
	t.Run("another connection still open: unchanged", func(t *testing.T) {
		d := running()
		bootstrapperConn(d, true, false, now)
		if !reflect.DeepEqual(d, running()) {
			t.Errorf("got %+v", d)
		}
	})
	t.Run("the agent connects with an address, then leaves", func(t *testing.T) {
		d := planned()
		a := &masterapi.AgentState{Connected: true, Version: "v1", Protocol: "1.0", Via: masterapi.ViaTunnel, Since: t0}
		e := agentConn(d, a, "192.0.2.1", now)
		if want := (masterapi.Entry{Time: now, Type: masterapi.EntryAgent, Status: masterapi.AgentConnected, Text: "agent v1 connected (tunnel)"}); !reflect.DeepEqual(e, want) {
			t.Errorf("entry %+v, want %+v", e, want)
		}
		if d.Agent != *a || d.Address != "192.0.2.1" || d.Servers[1].URL != "http://192.0.2.1:8080/healthz" {
			t.Errorf("after connecting: %+v", d)
		}
		e = agentConn(d, nil, "", now.Add(time.Second))
		if want := (masterapi.Entry{Time: now.Add(time.Second), Type: masterapi.EntryAgent, Status: masterapi.AgentDisconnected, Text: "agent disconnected"}); !reflect.DeepEqual(e, want) {
			t.Errorf("entry %+v, want %+v", e, want)
		}
		if d.Agent.Connected || !d.Agent.Since.Equal(now.Add(time.Second)) || d.Address != "192.0.2.1" {
			t.Errorf("after leaving: %+v", d.Agent)
		}
	})
}
