package webtest

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// The helpers of these tests are JavaScript expressions on a machine's
// card (machineJS).

// rowJS is the process list's row of process id.
func rowJS(card, id string) string {
	return `[...(` + card + `?.querySelectorAll('tr.process') ?? [])].find(r => r.dataset.process === ` + jsString(id) + `)`
}

// tabsJS is the process ids of the card's terminal tabs, in order.
func tabsJS(card string) string {
	return `[...(` + card + `?.querySelectorAll('.terminal-tab') ?? [])].map(b => b.dataset.process)`
}

// termHas says whether an xterm.js terminal's buffer has a line that is
// s once trimmed.
func termHas(termJS, s string) string {
	return `(t => { const b = t?.buffer.active; if (!b) return false; for (let i = 0; i < b.length; i++) { if (b.getLine(i).translateToString(true).trim() === ` +
		jsString(s) + `) return true; } return false; })(` + termJS + `)`
}

// TestDashboardProcesses: a machine's process list shows what the agent
// runs, including a shell no page has open (an orphan) and an exited
// process with its exit code; Attach opens the orphan in a tab from its
// first byte; New shell opens more tabs, Close hangs one up while the
// others stay live; Kill and Remove act from the list; Replay of a
// session the agent did not record says so; a reload reattaches the
// tabs whose shells still run and starts none; Detach leaves its shell
// running and listed.
func TestDashboardProcesses(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws5:default:owner5", "busy"
	machineToken := m.tokenFile(t, "-runtime-id", rid, "-machine-name", name)
	startAgentProc(t, bins, m, machineToken, rid, name)
	client := m.token(t, "-client", "-name", "alice")

	// Started before the page, by someone else: a shell nobody views, and
	// a process that failed.
	var orphan, failed processInfo
	m.agentRPC(t, client, rid, name, "process.start", map[string]any{"tty": true, "argv": []string{"sh", "-c", "echo orphan-$((6*7)); exec sleep 600", "<i>not-html</i>"}}, &orphan)
	m.agentRPC(t, client, rid, name, "process.start", map[string]any{"argv": []string{"sh", "-c", "echo failing; exit 3"}}, &failed)

	p := startBrowser(t, chromium)
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + client))
	card := machineJS(rid, name)
	orphanRow, failedRow := rowJS(card, orphan.ID), rowJS(card, failed.ID)
	p.wait("the orphan listed, running", orphanRow+`?.dataset.state === 'running' && `+orphanRow+`.querySelector('.command').textContent.includes('orphan')`)
	p.wait("the failed process listed with its exit code", failedRow+`?.dataset.state === 'exited' && `+failedRow+`.querySelector('.exit').textContent === '3'`)
	// Text, never HTML: the argv's <i> stays text.
	if n := eval[int](p, card+`.querySelectorAll('table.processes i').length`); n != 0 {
		t.Errorf("the process list made %d <i> elements of an argv", n)
	}
	if !eval[bool](p, orphanRow+`.querySelector('.command').textContent.includes('<i>not-html</i>')`) {
		t.Errorf("the orphan's command is %q, want its argv as text", eval[string](p, orphanRow+`.querySelector('.command').textContent`))
	}
	if n := eval[int](p, tabsJS(card)+`.length`); n != 0 {
		t.Fatalf("%d terminal tabs before any was opened", n)
	}

	// Attach: the orphan in a tab, from its first byte; the list counts the
	// page as its client.
	eval[bool](p, orphanRow+`.querySelector('button.attach').click() ?? true`)
	termOf := func(id string) string {
		return `window.porthole.terminal(` + jsString(rid) + `, ` + jsString(name) + `, ` + jsString(id) + `)`
	}
	p.wait("the orphan's output in its tab", termHas(termOf(orphan.ID), "orphan-42"))
	p.wait("the orphan's client counted", orphanRow+`.querySelector('.clients').textContent === '1'`)

	// Two new shells: three tabs.
	newShell := func(n int) string {
		t.Helper()
		eval[bool](p, card+`.querySelector('.open-terminal').click() ?? true`)
		p.wait("tab "+string(rune('0'+n)), tabsJS(card)+`.length === `+string(rune('0'+n))+` && `+tabsJS(card)+`.every(Boolean) && `+
			card+`.querySelector('.terminal-panel:not([hidden]) .terminal-status').dataset.state === 'open'`)
		return eval[string](p, `window.porthole.processId(`+jsString(rid)+`, `+jsString(name)+`)`)
	}
	shell2, shell3 := newShell(2), newShell(3)
	if got := eval[[]string](p, tabsJS(card)); strings.Join(got, ",") != strings.Join([]string{orphan.ID, shell2, shell3}, ",") {
		t.Fatalf("tabs %v, want %v", got, []string{orphan.ID, shell2, shell3})
	}
	p.wait("the new shells listed", rowJS(card, shell2)+` && `+rowJS(card, shell3))
	// The keyboard: ArrowLeft on the selected tab selects the one before,
	// Home the first, and the focus stays on the tabs.
	selected := `[...` + card + `.querySelectorAll('.terminal-tab')].find(b => b.getAttribute('aria-selected') === 'true')`
	key := func(k string) string {
		return eval[string](p, `(() => { `+selected+`.dispatchEvent(new KeyboardEvent('keydown', {key: `+jsString(k)+`, bubbles: true})); return `+selected+`.dataset.process + (document.activeElement === `+selected+` ? ' focused' : '') })()`)
	}
	if got := key("ArrowLeft"); got != shell2+" focused" {
		t.Errorf("ArrowLeft on tab %s: %q, want %q", shell3, got, shell2+" focused")
	}
	if got := key("Home"); got != orphan.ID+" focused" {
		t.Errorf("Home: %q, want %q", got, orphan.ID+" focused")
	}
	if got := key("End"); got != shell3+" focused" {
		t.Errorf("End: %q, want %q", got, shell3+" focused")
	}
	p.screenshot("dashboard-processes.png")

	// Close the second shell: it is hung up, the others stay live.
	eval[bool](p, `[...`+card+`.querySelectorAll('.terminal-tab')].find(b => b.dataset.process === `+jsString(shell2)+`).click() ?? true`)
	eval[bool](p, card+`.querySelector('.terminal-panel:not([hidden]) .close-terminal').click() ?? true`)
	p.wait("the closed shell exited", rowJS(card, shell2)+`?.dataset.state === 'exited'`)
	if got := eval[[]string](p, tabsJS(card)); strings.Join(got, ",") != orphan.ID+","+shell3 {
		t.Fatalf("tabs after Close: %v, want %v", got, []string{orphan.ID, shell3})
	}
	eval[bool](p, termOf(shell3)+`.focus() ?? true`)
	p.typeKeys("echo three-$((6*7))\r")
	p.wait("the third shell live", termHas(termOf(shell3), "three-42"))
	if st := eval[string](p, rowJS(card, orphan.ID)+`.dataset.state`); st != "running" {
		t.Errorf("the orphan is %q after another tab closed, want running", st)
	}

	// Kill from the list: the orphan's tab shows its end and offers a new
	// shell.
	eval[bool](p, orphanRow+`.querySelector('button.kill').click() ?? true`)
	p.wait("the orphan killed", orphanRow+`?.dataset.state === 'exited' && `+orphanRow+`.querySelector('.exit').textContent === 'SIGKILL'`)
	eval[bool](p, `[...`+card+`.querySelectorAll('.terminal-tab')].find(b => b.dataset.process === `+jsString(orphan.ID)+`).click() ?? true`)
	p.wait("the orphan's tab ended, with New shell", card+`.querySelector('.terminal-panel:not([hidden]) .terminal-status').dataset.state === 'exited' && `+
		`!`+card+`.querySelector('.terminal-panel:not([hidden]) .new-shell').hidden`)

	// Remove from the list: the agent forgets the exited process.
	eval[bool](p, failedRow+`.querySelector('button.remove').click() ?? true`)
	p.wait("the removed process gone from the list", failedRow+` === undefined && `+rowJS(card, shell3)+` !== undefined`)
	var list struct {
		Processes []processInfo `json:"processes"`
	}
	m.agentRPC(t, client, rid, name, "process.list", nil, &list)
	for _, pi := range list.Processes {
		if pi.ID == failed.ID {
			t.Errorf("process %s still on the agent after Remove: %+v", failed.ID, pi)
		}
	}

	// Replay, on an agent without -record: the player says why.
	eval[bool](p, rowJS(card, shell3)+`.querySelector('button.replay').click() ?? true`)
	p.wait("the player's error", card+`.querySelector('.player-status')?.dataset.state === 'failed' && `+card+`.querySelector('.player-status').textContent.includes('404')`)
	t.Logf("replay without -record: %s", eval[string](p, card+`.querySelector('.player-status').textContent`))
	eval[bool](p, card+`.querySelector('.player-close').click() ?? true`)

	// A reload reattaches the shell still running, and only it; no new
	// process is started.
	before := len(list.Processes)
	p.do(chromedp.Reload())
	p.wait("the running shell's tab back", tabsJS(card)+`.join() === `+jsString(shell3)+` && `+
		card+`.querySelector('.terminal-panel:not([hidden]) .terminal-status').dataset.state === 'open'`)
	p.wait("its output replayed", termHas(termOf(shell3), "three-42"))
	m.agentRPC(t, client, rid, name, "process.list", nil, &list)
	if len(list.Processes) != before {
		t.Errorf("the agent has %d processes after the reload, want %d: %+v", len(list.Processes), before, list.Processes)
	}

	// Detach: the tab goes, the shell runs on, listed with Attach; a reload
	// no longer opens it.
	eval[bool](p, card+`.querySelector('.terminal-panel:not([hidden]) .detach-terminal').click() ?? true`)
	p.wait("the tab gone, the shell running and attachable", tabsJS(card)+`.length === 0 && `+rowJS(card, shell3)+`?.dataset.state === 'running' && `+
		rowJS(card, shell3)+`.querySelector('button.attach').textContent === 'Attach' && `+rowJS(card, shell3)+`.querySelector('.clients').textContent === '0'`)
	p.do(chromedp.Reload())
	p.wait("the list after the reload", rowJS(card, shell3)+`?.dataset.state === 'running'`)
	if n := eval[int](p, tabsJS(card)+`.length`); n != 0 {
		t.Errorf("%d tabs after a reload that follows Detach, want none", n)
	}
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// TestDashboardReplayAndAudit: on an agent started with -record, a shell
// opened in the page and exited is replayed from its recording in the
// player (its output, to the end); New shell replaces the ended tab. The
// Audit view lists the master's audit trail a page at a time (here 3,
// ?audit-page=3), "Load more" goes on after the last entry, and the
// action and principal filters narrow it.
func TestDashboardReplayAndAudit(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws6:default:owner6", "recorded"
	machineToken := m.tokenFile(t, "-runtime-id", rid, "-machine-name", name)
	startAgentProc(t, bins, m, machineToken, rid, name, "-record", t.TempDir())
	client := m.token(t, "-client", "-name", "alice")

	p := startBrowser(t, chromium)
	p.do(chromedp.Navigate("http://" + m.addr + "/?audit-page=3#token=" + client))
	card := machineJS(rid, name)
	p.wait("the agent connected", card+`?.querySelector('.open-terminal')?.disabled === false`)
	eval[bool](p, card+`.querySelector('.open-terminal').click() ?? true`)
	stateJS := card + `?.querySelector('.terminal-panel:not([hidden]) .terminal-status')?.dataset.state`
	termJS := `window.porthole.terminal(` + jsString(rid) + `, ` + jsString(name) + `)`
	p.wait("a shell prompt", termHas(termJS, strings.TrimSpace(prompt))+` && `+stateJS+` === 'open'`)
	id := eval[string](p, `window.porthole.processId(`+jsString(rid)+`, `+jsString(name)+`)`)
	p.typeText("echo rec-$((6*7)); exit\r")
	p.wait("the shell's end", stateJS+` === 'exited' && !`+card+`.querySelector('.terminal-panel:not([hidden]) .new-shell').hidden`)

	// Replay: the recording, played to its end.
	row := rowJS(card, id)
	p.wait("the exited shell listed", row+`?.dataset.state === 'exited'`)
	eval[bool](p, row+`.querySelector('button.replay').click() ?? true`)
	playerJS := `window.porthole.player(` + jsString(rid) + `, ` + jsString(name) + `)`
	p.wait("the replay to end", card+`.querySelector('.player-status')?.dataset.state === 'ended'`)
	p.wait("the recorded output replayed", termHas(playerJS, "rec-42"))
	t.Logf("player: %s", eval[string](p, card+`.querySelector('.player-status').textContent`))
	p.screenshot("dashboard-replay.png")
	// Play again from the start.
	eval[bool](p, card+`.querySelector('.player-play').click() ?? true`)
	p.wait("the replay ended again", card+`.querySelector('.player-status').dataset.state === 'ended' && `+termHas(playerJS, "rec-42"))

	// New shell replaces the ended tab.
	eval[bool](p, card+`.querySelector('.terminal-panel:not([hidden]) .new-shell').click() ?? true`)
	p.wait("a new shell in the only tab", tabsJS(card)+`.length === 1 && `+tabsJS(card)+`[0] && `+tabsJS(card)+`[0] !== `+jsString(id)+` && `+stateJS+` === 'open'`)

	// The Audit view: 3 entries a page.
	entriesJS := `[...document.querySelectorAll('#audit tr.audit-entry')].map(r => ({seq: Number(r.dataset.seq), action: r.dataset.action, principal: r.dataset.principal}))`
	eval[bool](p, `document.getElementById('nav-audit').click() ?? true`)
	p.wait("the first page", entriesJS+`.length === 3 && document.getElementById('runtimes').hidden`)
	eval[bool](p, `document.getElementById('audit-more').click() ?? true`)
	p.wait("the second page", entriesJS+`.length === 6`)
	type entry struct {
		Seq       int    `json:"seq"`
		Action    string `json:"action"`
		Principal string `json:"principal"`
	}
	got := eval[[]entry](p, entriesJS)
	for i, e := range got {
		if i > 0 && e.Seq <= got[i-1].Seq {
			t.Errorf("entry %d has seq %d after %d: %+v", i, e.Seq, got[i-1].Seq, got)
		}
		if e.Principal != "alice" {
			t.Errorf("entry %+v: principal %q, want alice", e, e.Principal)
		}
	}
	// Filter by action: the page's process.start calls (two shells).
	eval[bool](p, `(() => { document.getElementById('audit-action').value = 'process.start'; document.querySelector('.audit-filter button[type=submit]').click(); return true })()`)
	p.wait("the process.start entries", entriesJS+`.length === 2 && `+entriesJS+`.every(e => e.action === 'process.start' && e.principal === 'alice')`)
	p.wait("the machine in each", `[...document.querySelectorAll('#audit tr.audit-entry')].every(r => r.textContent.includes(`+jsString(name)+`))`)
	p.screenshot("dashboard-audit.png")
	// Filter by a principal nobody is.
	eval[bool](p, `(() => { document.getElementById('audit-principal').value = 'mallory'; document.querySelector('.audit-filter button[type=submit]').click(); return true })()`)
	p.wait("no entry for mallory", entriesJS+`.length === 0 && document.querySelector('.audit-status').textContent.startsWith('0 entries')`)
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}
