package master

import (
	"encoding/json"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// The reducer: how each bootstrapper event and each connection change
// turns a machine's document into its next state and one journal entry.
// Pure functions over the document; the state (journal.go) holds the
// locks, numbers the entries and commits them.

// seen reports whether ev, received on endpoint path, was accepted before
// (same boot and endpoint, seq at or below the cursor); when not, it
// advances the cursor. Events without bootId and seq (Che's bootstrapper)
// are never seen.
func seen(d *masterapi.Machine, path string, ev *che.Event) bool {
	if ev.BootID == "" || ev.Seq == 0 {
		return false
	}
	cur := ev.BootID + " " + path
	if ev.Seq <= d.Cursors[cur] {
		return true
	}
	if d.Cursors == nil {
		d.Cursors = map[string]uint64{}
	}
	if _, known := d.Cursors[cur]; !known {
		pruneCursors(d.Cursors, ev.BootID)
	}
	d.Cursors[cur] = ev.Seq
	return false
}

// pruneCursors keeps the cursors of boot and of at most one other boot
// (a previous run's connection may still deliver its last events).
func pruneCursors(c map[string]uint64, boot string) {
	others := map[string]bool{}
	for k := range c {
		if b, _, _ := strings.Cut(k, " "); b != boot {
			others[b] = true
		}
	}
	if len(others) <= 1 {
		return
	}
	for k := range c {
		if b, _, _ := strings.Cut(k, " "); b != boot {
			delete(c, k)
		}
	}
}

// apply applies a valid event (che.Validate) of method to d and returns
// its journal entry (not numbered). host is where the bootstrapper
// connects from: the machine's address until its agent announces one.
// now stands for the event's time when it has none.
func apply(d *masterapi.Machine, method string, ev *che.Event, host string, now time.Time) masterapi.Entry {
	at := ev.Time
	if at.IsZero() {
		at = now
	}
	e := masterapi.Entry{Time: at, Installer: ev.Installer, Status: ev.Status, Error: ev.Error, BootID: ev.BootID}
	switch method {
	case che.MethodBootstrapperStatus:
		e.Type = masterapi.EntryBootstrapper
		d.Bootstrapper.Status = ev.Status
		switch ev.Status {
		case che.StatusStarting:
			d.Status, d.Error, d.BootID = masterapi.MachineStarting, "", ev.BootID
			if host != "" && d.Agent.Via == "" {
				d.Address = host
			}
			if len(ev.Installers) > 0 {
				plan(d, ev.Installers)
			}
		case che.StatusDone:
			d.Status, d.Error = masterapi.MachineRunning, ""
		case che.StatusFailed:
			d.Status, d.Error = masterapi.MachineFailed, ev.Error
		}
	case che.MethodInstallerStatus:
		e.Type = masterapi.EntryInstaller
		in := installer(d, ev.Installer)
		in.Status, in.Error = ev.Status, ev.Error
		switch ev.Status {
		case che.StatusRunning:
			setServers(d, ev.Installer, "", masterapi.ServerRunning)
		case che.StatusFailed:
			setServers(d, ev.Installer, "", masterapi.ServerStopped)
		}
	case che.MethodServerStatus:
		e.Type, e.Server, e.Port = masterapi.EntryServer, ev.Server, ev.Port
		setServers(d, ev.Installer, ev.Server, ev.Status)
	case che.MethodInstallerLog:
		e.Type, e.Status, e.Error = masterapi.EntryLog, "", ""
		e.Text, e.Stream, e.Partial, e.Raw, e.Lost = ev.Text, ev.Stream, ev.Partial, ev.Raw, ev.Lost
	}
	return e
}

// plan replaces d's installers and servers with the plan announced with
// STARTING: installers PENDING, servers UNKNOWN (sorted by name within an
// installer).
func plan(d *masterapi.Machine, installers []che.PlanInstaller) {
	d.Installers, d.Servers = nil, nil
	for _, in := range installers {
		d.Installers = append(d.Installers, masterapi.Installer{ID: in.ID, Status: masterapi.InstallerPending})
		names := make([]string, 0, len(in.Servers))
		for n := range in.Servers {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			sv := in.Servers[n]
			d.Servers = append(d.Servers, masterapi.Server{Name: n, Installer: in.ID, Port: sv.Port, Protocol: sv.Protocol,
				Path: sv.Path, Attributes: attributes(sv.Attributes), Status: masterapi.ServerUnknown})
		}
	}
	setURLs(d)
}

// bootstrapperConn records whether d's bootstrapper has a connection open
// now; the last one closing normally after DONE means the machine stopped
// (the bootstrapper ends when its servers' processes have ended).
func bootstrapperConn(d *masterapi.Machine, connected, normalEnd bool, now time.Time) {
	if d.Bootstrapper.Connected != connected {
		d.Bootstrapper.Connected, d.Bootstrapper.Since = connected, now
	}
	if !connected && normalEnd && d.Status == masterapi.MachineRunning {
		d.Status = masterapi.MachineStopped
		for i := range d.Servers {
			d.Servers[i].Status = masterapi.ServerStopped
		}
	}
}

// agentConn records d's agent connecting (a is its announcement, address
// the host its servers are reached on, "" to keep d's) or disconnecting
// (a nil), and returns the journal entry saying so.
func agentConn(d *masterapi.Machine, a *masterapi.AgentState, address string, now time.Time) masterapi.Entry {
	e := masterapi.Entry{Time: now, Type: masterapi.EntryAgent}
	d.Ports = nil // the new agent reports its own (agentPorts)
	if a == nil {
		d.Agent.Connected, d.Agent.Since = false, now
		e.Status, e.Text = masterapi.AgentDisconnected, "agent disconnected"
		return e
	}
	d.Agent = *a
	if address != "" {
		d.Address = address
		setURLs(d)
	}
	e.Status, e.Text = masterapi.AgentConnected, "agent "+a.Version+" connected ("+a.Via+")"
	return e
}

// agentPorts sets d's listening ports from its agent's report (sorted by
// port then address), one entry per port; it reports whether they
// changed.
func agentPorts(d *masterapi.Machine, ports []protocol.ListeningPort) bool {
	var out []masterapi.ListeningPort
	for _, p := range ports {
		if n := len(out); n > 0 && out[n-1].Port == p.Port {
			out[n-1].Addresses = append(out[n-1].Addresses, p.Address)
			continue
		}
		out = append(out, masterapi.ListeningPort{Port: p.Port, Addresses: []string{p.Address}})
	}
	if slices.EqualFunc(out, d.Ports, func(a, b masterapi.ListeningPort) bool {
		return a.Port == b.Port && slices.Equal(a.Addresses, b.Addresses)
	}) {
		return false
	}
	d.Ports = out
	return true
}

// installer returns d's installer id, adding it.
func installer(d *masterapi.Machine, id string) *masterapi.Installer {
	for i := range d.Installers {
		if d.Installers[i].ID == id {
			return &d.Installers[i]
		}
	}
	d.Installers = append(d.Installers, masterapi.Installer{ID: id})
	return &d.Installers[len(d.Installers)-1]
}

// setServers sets the status of installer's servers (all of them when
// name is empty), adding a server the plan did not announce.
func setServers(d *masterapi.Machine, installer, name, status string) {
	found := false
	for i := range d.Servers {
		sv := &d.Servers[i]
		if sv.Installer == installer && (name == "" || sv.Name == name) {
			sv.Status, found = status, true
		}
	}
	if !found && name != "" {
		d.Servers = append(d.Servers, masterapi.Server{Name: name, Installer: installer, Status: status})
		setURLs(d)
	}
}

// setURLs computes the servers' URLs from the machine's address.
func setURLs(d *masterapi.Machine) {
	for i := range d.Servers {
		sv := &d.Servers[i]
		sv.URL = ""
		port, _, _ := strings.Cut(sv.Port, "/")
		if d.Address == "" || port == "" || sv.Protocol == "" {
			continue
		}
		path := sv.Path
		if path != "" && !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		sv.URL = sv.Protocol + "://" + net.JoinHostPort(d.Address, port) + path
	}
}

// attributes reads config.json's attributes (strings in Che's; other
// JSON values are kept as their text).
func attributes(raw json.RawMessage) map[string]string {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		} else {
			out[k] = string(v)
		}
	}
	return out
}
