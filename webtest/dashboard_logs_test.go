package webtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// oldJournal writes into a master's data directory (before it starts) a
// machine that failed two hours ago: its document and journal, installer
// org.example.base's 1,200 stdout lines (one of them a line sent in two
// parts, and "needle-in-the-log" early on), then org.example.failing's
// 12 stderr lines and its failure. It returns the entries in order.
func oldJournal(t *testing.T, data, rid, name, errMsg string) []masterapi.Entry {
	t.Helper()
	at := time.Now().Add(-2 * time.Hour).UTC()
	var es []masterapi.Entry
	add := func(e masterapi.Entry) {
		e.Seq = uint64(len(es) + 1)
		e.Time = at.Add(time.Duration(e.Seq) * time.Millisecond)
		es = append(es, e)
	}
	add(masterapi.Entry{Type: masterapi.EntryBootstrapper, Status: "STARTING"})
	add(masterapi.Entry{Type: masterapi.EntryInstaller, Installer: "org.example.base", Status: "STARTING"})
	for i := 1; i <= 1200; i++ {
		switch i {
		case 100:
			add(masterapi.Entry{Type: masterapi.EntryLog, Installer: "org.example.base", Stream: "STDOUT", Text: "needle-in-the-log <b>here</b>"})
		case 1100:
			add(masterapi.Entry{Type: masterapi.EntryLog, Installer: "org.example.base", Stream: "STDOUT", Text: "a line in ", Partial: true})
			add(masterapi.Entry{Type: masterapi.EntryLog, Installer: "org.example.base", Stream: "STDOUT", Text: "two parts"})
		default:
			add(masterapi.Entry{Type: masterapi.EntryLog, Installer: "org.example.base", Stream: "STDOUT", Text: fmt.Sprintf("base line %04d", i)})
		}
	}
	add(masterapi.Entry{Type: masterapi.EntryInstaller, Installer: "org.example.base", Status: "DONE"})
	add(masterapi.Entry{Type: masterapi.EntryInstaller, Installer: "org.example.failing", Status: "STARTING"})
	add(masterapi.Entry{Type: masterapi.EntryLog, Installer: "org.example.failing", Stream: "STDOUT", Text: "formatting the disk"})
	for i := 1; i <= 12; i++ {
		add(masterapi.Entry{Type: masterapi.EntryLog, Installer: "org.example.failing", Stream: "STDERR", Text: fmt.Sprintf("mkfs: error %02d:  no space left  ", i)})
	}
	add(masterapi.Entry{Type: masterapi.EntryInstaller, Installer: "org.example.failing", Status: "FAILED", Error: errMsg})
	add(masterapi.Entry{Type: masterapi.EntryBootstrapper, Status: "FAILED", Error: errMsg})

	doc := masterapi.Machine{RuntimeID: rid, Name: name, Status: masterapi.MachineFailed, Error: errMsg,
		Installers: []masterapi.Installer{{ID: "org.example.base", Status: "DONE"}, {ID: "org.example.failing", Status: "FAILED", Error: errMsg}},
		Servers:    []masterapi.Server{}, Bootstrapper: masterapi.BootstrapperState{Status: "FAILED"},
		Seq: uint64(len(es)), Updated: es[len(es)-1].Time}
	st, err := store.Open(filepath.Join(data, "porthole.db"), store.Options{Time: master.EntryTime})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k := store.Key{Runtime: rid, Machine: name}
	b := &store.Batch{Machines: map[store.Key][]byte{k: mustJSON(t, doc)}}
	for _, e := range es {
		b.Entries = append(b.Entries, store.KeyedEntry{Key: k, Entry: store.Entry{Seq: e.Seq, Data: mustJSON(t, e)}})
	}
	if err := st.Commit(b); err != nil {
		t.Fatal(err)
	}
	return es
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDashboardLogs: a machine that failed two hours ago (its journal
// written into the master's store) shows its failure, the error once,
// and the failing installer's last stderr lines next to it, though the
// live subscription replays only the last hour. The log opens with the
// last 1,000 entries, each line with its time; Load earlier brings the
// rest; the filter by installer and stream and the search find known
// lines; the text download gives exactly the filtered lines, and the
// JSON Lines download the journal's entries.
func TestDashboardLogs(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	const rid, name = "ws6:default:owner6", "failed-earlier"
	const errMsg = "Exit code for 'org.example.failing' installation is '1' while expected to be 0"
	data := t.TempDir()
	entries := oldJournal(t, data, rid, name, errMsg)
	m := startMasterAt(t, bins, "127.0.0.1:"+fmt.Sprint(testutil.FreePort(t)), data)

	p := startBrowser(t, chromium)
	downloads := t.TempDir()
	done := make(chan string, 4)
	if err := chromedp.ListenBrowser(p.ctx, func(ev any) {
		if ev, ok := ev.(*browser.EventDownloadProgress); ok && ev.State == browser.DownloadProgressStateCompleted {
			done <- ev.FilePath
		}
	}); err != nil {
		t.Fatal(err)
	}
	events := true
	if _, err := chromedp.CallBrowser(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads, EventsEnabled: &events}); err != nil {
		t.Fatal(err)
	}
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + m.token(t, "-client")))
	card := machineJS(rid, name)
	p.wait("the machine FAILED", card+`?.querySelector('.machine-status')?.dataset.status === `+jsString(masterapi.MachineFailed))
	// Its cause: the last 10 stderr lines, under the error.
	var tail []string
	for i := 3; i <= 12; i++ {
		tail = append(tail, fmt.Sprintf("mkfs: error %02d:  no space left  ", i))
	}
	p.wait("the last stderr lines under the error", card+`.querySelector('.machine-error .stderr-tail[data-installer="org.example.failing"] pre')?.textContent === `+jsString(strings.Join(tail, "\n")))
	outside := eval[string](p, `(() => { const c = `+card+`.cloneNode(true); c.querySelector('details.logs').remove(); return c.textContent })()`)
	if n := strings.Count(outside, errMsg); n != 1 {
		t.Errorf("the error sentence shows %d times outside the log, want once%s", n, p.state())
	}
	// The last 1,000 entries: 999 lines (a line in two parts), each with
	// its time.
	lines := card + `.querySelectorAll('.log > .line')`
	p.wait("the last page of the journal", lines+`.length === 999`)
	first := entries[len(entries)-1000]
	if got, want := eval[string](p, card+`.querySelector('.log > .line time').getAttribute('datetime')`), first.Time.Format(time.RFC3339Nano); got != want {
		t.Errorf("the first line's time is %q, want %q", got, want)
	}
	if got := eval[string](p, card+`.querySelector('.log > .line time').textContent`); !strings.Contains(got, ":") {
		t.Errorf("the first line's time shows %q", got)
	}
	p.screenshot("logs-failed-earlier.png")

	// Search before and after Load earlier: the needle is older.
	search := func(q string) {
		eval[bool](p, `(() => { const i = `+card+`.querySelector('.log-search'); i.value = `+jsString(q)+`; i.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); return true })()`)
	}
	visible := `[...` + lines + `].filter(e => !e.hidden).map(e => e.querySelector('.text').textContent)`
	search("needle")
	p.wait("no needle in the last page", visible+`.length === 0`)
	eval[bool](p, card+`.querySelector('.load-earlier').click() ?? true`)
	p.wait("the whole journal", lines+`.length === `+fmt.Sprint(len(entries)-1)+` && `+card+`.querySelector('.load-earlier').hidden`)
	p.wait("the needle found, marked, as text", visible+`.join() === 'needle-in-the-log <b>here</b>' && `+card+`.querySelector('.log mark')?.textContent === 'needle' && !`+card+`.querySelector('.log b')`)
	search("")

	// Filter: the failing installer's stderr.
	setSelect := func(cls, v string) {
		eval[bool](p, `(() => { const s = `+card+`.querySelector('.`+cls+`'); s.value = `+jsString(v)+`; s.dispatchEvent(new Event('change')); return true })()`)
	}
	setSelect("log-installer", "org.example.failing")
	setSelect("log-stream", "STDERR")
	p.wait("the 12 stderr lines", visible+`.length === 12`)
	p.screenshot("logs-filtered.png")

	download := func(button string) string {
		t.Helper()
		eval[bool](p, card+`.querySelector('.`+button+`').click() ?? true`)
		select {
		case path := <-done:
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		case <-time.After(waitFor):
			t.Fatalf("no download after %v%s", waitFor, p.state())
		}
		return ""
	}
	var want strings.Builder
	for _, e := range entries {
		if e.Installer == "org.example.failing" && e.Stream == "STDERR" {
			fmt.Fprintf(&want, "%s org.example.failing stderr %s\n", e.Time.Format(time.RFC3339Nano), e.Text)
		}
	}
	if got := download("download-text"); got != want.String() {
		t.Errorf("the text download:\n%s\nwant:\n%s", got, want.String())
	}

	// JSON Lines, unfiltered: the journal's entries.
	setSelect("log-installer", "")
	setSelect("log-stream", "")
	got := strings.Split(strings.TrimSuffix(download("download-jsonl"), "\n"), "\n")
	if len(got) != len(entries) {
		t.Fatalf("the JSONL download has %d lines, want %d", len(got), len(entries))
	}
	for i, l := range got {
		var e masterapi.Entry
		err := json.Unmarshal([]byte(l), &e)
		w := entries[i]
		sameTime := e.Time.Equal(w.Time)
		e.Time, w.Time = time.Time{}, time.Time{}
		if err != nil || !sameTime || !reflect.DeepEqual(e, w) {
			t.Fatalf("JSONL line %d: %s (%v), want %+v", i+1, l, err, entries[i])
		}
	}

	// 1024 px wide and a narrow window: nothing wider than the window
	// (the tables scroll inside their box).
	for _, w := range []int64{1024, 400} {
		p.do(chromedp.EmulateViewport(w, 800))
		p.wait(fmt.Sprintf("no sideways scrolling at %d px", w), `document.documentElement.scrollWidth <= innerWidth`)
		if w == 400 {
			p.screenshot("narrow.png")
		}
	}
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}
