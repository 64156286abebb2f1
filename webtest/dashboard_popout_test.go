package webtest

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// TestDashboardPopout: a shell's terminal popped out of the dashboard
// opens in a browser tab of its own (#/m/RID/MACHINE/p/ID) on the same
// process, replayed; the dashboard's tab goes, the process runs on. A
// reload of that tab reattaches the same process (no new one). Copy puts
// the terminal's selection on the clipboard, Paste types the clipboard
// into the shell; a link the terminal would open is opened only when it
// is http(s).
func TestDashboardPopout(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws8:default:owner8", "popped"
	startAgentProc(t, bins, m, m.tokenFile(t, "-runtime-id", rid, "-machine-name", name), rid, name)
	client := m.token(t, "-client")
	m.waitAgent(t, client, rid, name)

	p := startBrowser(t, chromium)
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + client))
	card := machineJS(rid, name)
	p.wait("the agent connected", card+` && !`+card+`.querySelector('.open-terminal').disabled`)
	eval[bool](p, card+`.querySelector('.open-terminal').click() ?? true`)
	p.wait("the shell open", card+`.querySelector('.terminal-panel:not([hidden]) .terminal-status')?.dataset.state === 'open'`)
	id := eval[string](p, `window.porthole.processId(`+jsString(rid)+`, `+jsString(name)+`)`)
	p.typeText(`echo po""p-$((6*7))` + "\r")
	term := `window.porthole.terminal(` + jsString(rid) + `, ` + jsString(name) + `)`
	p.wait("the output", termHas(term, "pop-42"))

	opened := chromedp.WaitNewTarget(p.ctx, func(i *target.Info) bool { return strings.Contains(i.URL, "#/m/") })
	eval[bool](p, card+`.querySelector('.terminal-panel:not([hidden]) .popout-terminal').click() ?? true`)
	var tid target.ID
	select {
	case tid = <-opened:
	case <-time.After(waitFor):
		t.Fatalf("no tab opened by Pop out%s", p.state())
	}
	pctx, cancel := chromedp.NewContext(p.ctx, chromedp.WithTargetID(tid))
	defer cancel()
	pop := &page{t: t, ctx: pctx}
	pop.wait("the popped-out terminal open", `document.querySelector('.popout .terminal-status')?.dataset.state === 'open'`)
	if got, want := eval[string](pop, `location.hash`), "#/m/"+strings.ReplaceAll(rid, ":", "%3A")+"/"+name+"/p/"+id; got != want {
		t.Errorf("the new tab's address: %q, want %q", got, want)
	}
	popTerm := `window.porthole.terminal(` + jsString(rid) + `, ` + jsString(name) + `)`
	pop.wait("its output replayed", termHas(popTerm, "pop-42"))
	p.wait("the dashboard's tab gone", tabsJS(card)+`.length === 0`)
	// The process runs on, viewed by the new tab only (the dashboard, in
	// the background now, does not poll its list).
	testutil.WaitFor(t, "the process running with one client", func() bool {
		var pi struct {
			State   string `json:"state"`
			Clients int    `json:"clients"`
		}
		m.agentRPC(t, client, rid, name, "process.get", map[string]string{"id": id}, &pi)
		return pi.State == "running" && pi.Clients == 1
	})
	pop.screenshot("popout.png")

	// A reload of the new tab: the same process.
	var before struct {
		Processes []processInfo `json:"processes"`
	}
	m.agentRPC(t, client, rid, name, "process.list", nil, &before)
	pop.do(chromedp.Reload())
	pop.wait("reattached", `document.querySelector('.popout .terminal-status')?.dataset.state === 'open' && window.porthole.processId() === `+jsString(id))
	pop.wait("replayed after the reload", termHas(popTerm, "pop-42"))
	var after struct {
		Processes []processInfo `json:"processes"`
	}
	m.agentRPC(t, client, rid, name, "process.list", nil, &after)
	if len(after.Processes) != len(before.Processes) {
		t.Errorf("%d processes after the reload, %d before", len(after.Processes), len(before.Processes))
	}

	// Copy and paste, with the clipboard allowed to the page.
	for _, perm := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(p.ctx, browser.SetPermission, browser.SetPermissionParams{Permission: &browser.PermissionDescriptor{Name: perm}, Setting: browser.PermissionSettingGranted, Origin: "http://" + m.addr}); err != nil {
			t.Fatal(err)
		}
	}
	eval[bool](pop, popTerm+`.selectAll() ?? true`)
	eval[bool](pop, `document.querySelector('.popout .copy-terminal').click() ?? true`)
	// Each poll reads the clipboard and looks at what the last read gave.
	pop.wait("the selection copied", `(navigator.clipboard.readText().then(t => window.copied = t), (window.copied || '').includes('pop-42'))`)
	if _, err := chromedp.Run(pctx, chromedp.Evaluate[bool](`navigator.clipboard.writeText('echo pas""ted-$((6*7))\r').then(() => true)`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatal(err)
	}
	eval[bool](pop, `document.querySelector('.popout .paste-terminal').click() ?? true`)
	pop.wait("the pasted command ran", termHas(popTerm, "pasted-42"))

	// Links: http(s) opens, other schemes do not (the OSC 8 handler; the
	// web links addon calls the same openLink).
	got := eval[[]string](pop, `(() => { const opened = []; window.open = (u) => { opened.push(u); return null };
		const h = `+popTerm+`.options.linkHandler;
		for (const u of ['https://example.com/x', 'javascript:alert(1)', 'data:text/html,hi', 'file:///etc/passwd', 'http://example.com/']) h.activate(new MouseEvent('click'), u);
		return opened })()`)
	if strings.Join(got, " ") != "https://example.com/x http://example.com/" {
		t.Errorf("links opened: %q, want only the http(s) ones", got)
	}
	for _, pg := range []*page{p, pop} {
		if ex := pg.exceptions(); len(ex) > 0 {
			t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
		}
	}
}
