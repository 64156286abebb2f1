package webtest

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// site is a small multi-page site: two pages, each with the stylesheet,
// the image and a script, linked to each other; index.html also records
// what its sandbox lets it do with the master's origin (window.sandbox).
func site(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	img := image.NewRGBA(image.Rect(0, 0, 7, 5))
	for x := range 7 {
		for y := range 5 {
			img.Set(x, y, color.RGBA{200, 40, 40, 255})
		}
	}
	var pngData bytes.Buffer
	if err := png.Encode(&pngData, img); err != nil {
		t.Fatal(err)
	}
	page := func(title, link, extra string) string {
		return `<!doctype html><html><head><title>` + title + `</title><link rel="stylesheet" href="style.css"><script src="app.js"></script></head>
<body><h1>` + title + `</h1><img id="img" src="img/dot.png"><a id="next" href="` + link + `">next</a>` + extra + `</body></html>`
	}
	probe := `<script>
window.sandbox = {origin: self.origin};
try { sessionStorage.getItem('porthole-master.token'); window.sandbox.storage = 'readable'; } catch (e) { window.sandbox.storage = e.name; }
fetch('/api/runtimes', {credentials: 'include'}).then(r => { window.sandbox.api = 'status ' + r.status; }, e => { window.sandbox.api = 'blocked'; });
</script>`
	files := map[string]string{
		"index.html":   page("Site index", "page2.html", probe),
		"page2.html":   page("Site page 2", "index.html", ""),
		"style.css":    "body { color: rgb(1, 2, 3); }\n",
		"app.js":       "window.appLoaded = true;\n",
		"img/dot.png":  pngData.String(),
		".hidden.html": "never served",
	}
	for name, data := range files {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestDashboardPorts serves a multi-page site from a machine (its
// installer runs a static web server) and a server nobody declared, and
// opens both from the dashboard's links in headless Chromium: each opens
// in a new tab through the master (ticket, then site key); every
// subresource of the site loads, its link to the second page works, and
// the page, sandboxed, cannot read the dashboard's storage or the
// master's API. Without the key, or with it on another port or machine,
// the master refuses.
func TestDashboardPorts(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws3:default:owner3", "web-machine"
	machineToken := m.tokenFile(t, "-runtime-id", rid, "-machine-name", name)
	startAgentProc(t, bins, m, machineToken, rid, name)
	webPort := testutil.FreePort(t)
	cfg := fmt.Sprintf(`[{"id":"org.example.site","script":"exec /proc/$PPID/exe agent -insecure-no-auth -listen 127.0.0.1:%d -web %s",
		"servers":{"site":{"port":"%d/tcp","protocol":"http","path":"/index.html"}}}]`, webPort, site(t), webPort)
	startBootstrap(t, bins, m, machineToken, rid, name, cfg)
	// Something listening that no installer declared: the agent detects it.
	detected := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>detected</title><p id="p">served from a detected port</p>`)
	}))
	t.Cleanup(detected.Close)
	detPort := detected.Listener.Addr().(*net.TCPAddr).Port

	p := startBrowser(t, chromium)
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + m.token(t, "-client")))
	card := machineJS(rid, name)
	siteLink := card + `?.querySelector('tr.server[data-server="site"] a.open-port')`
	detLink := card + `?.querySelector('tr.port[data-port="` + strconv.Itoa(detPort) + `"] a.open-port')`
	p.wait("the site's link", siteLink+` != null && `+card+`.querySelector('tr.server[data-server="site"] .badge').dataset.status === 'RUNNING'`)
	p.wait("the detected port with its link", detLink+` != null`)
	p.wait("the site's port listed as listening, named after its server", card+`.querySelector('tr.port[data-port="`+strconv.Itoa(webPort)+`"]')?.textContent.includes('site')`)
	p.screenshot("dashboard-ports.png")

	// open clicks a link of the dashboard and returns the tab it opens,
	// once that tab is at the site key (after about:blank, the ticket and
	// the master's redirect: polling before would see the tab navigate).
	open := func(link string) *page {
		t.Helper()
		atKey := make(chan target.ID, 1)
		lctx, stop := context.WithCancel(p.ctx)
		defer stop()
		if err := chromedp.ListenBrowser(lctx, func(ev any) {
			if ev, ok := ev.(*target.EventTargetInfoChanged); ok && ev.TargetInfo.Type == "page" && strings.Contains(ev.TargetInfo.URL, "/~/") {
				select {
				case atKey <- ev.TargetInfo.TargetID:
				default:
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		eval[bool](p, link+`.click() ?? true`)
		var id target.ID
		select {
		case id = <-atKey:
		case <-time.After(waitFor):
			t.Fatalf("no tab at a site key within %v", waitFor)
		}
		ctx, cancel := chromedp.NewContext(p.ctx, chromedp.WithTargetID(id))
		t.Cleanup(cancel)
		if err := chromedp.Do(ctx); err != nil {
			t.Fatal(err)
		}
		return &page{t: t, ctx: ctx}
	}

	tab := open(siteLink)
	// (The server answers /index.html with a redirect to ./, which stays
	// under the key.)
	tab.wait("the site's index under a site key", `location.pathname.includes('/ports/`+strconv.Itoa(webPort)+`/~/') && !location.search.includes('ticket') && document.readyState === 'complete'`)
	loaded := func(title string) string {
		return `document.title === ` + jsString(title) + ` && getComputedStyle(document.body).color === 'rgb(1, 2, 3)' && ` +
			`document.getElementById('img').complete && document.getElementById('img').naturalWidth === 7 && window.appLoaded === true`
	}
	tab.wait("the index's stylesheet, image and script", loaded("Site index"))
	tab.wait("the sandbox's verdict", `window.sandbox?.api !== undefined`)
	if sb := eval[map[string]string](tab, `window.sandbox`); sb["origin"] != "null" || sb["storage"] != "SecurityError" || sb["api"] != "blocked" {
		t.Errorf("the served page, sandboxed: %v; want origin null, storage SecurityError, api blocked", sb)
	}
	// The site's root: …/ports/PORT/~/KEY.
	prefix := eval[string](tab, `location.href.replace(/(\/~\/[^/]+).*$/, '$1')`)
	// The link: a navigation, after which the page is polled again.
	navigated := make(chan struct{}, 1)
	if err := chromedp.Listen(tab.ctx, func(ev any) {
		if _, ok := ev.(*cdppage.EventLoadEventFired); ok {
			select {
			case navigated <- struct{}{}:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	tab.do(chromedp.Click(chromedp.CSS("#next")))
	select {
	case <-navigated:
	case <-time.After(waitFor):
		t.Fatalf("the link to the second page did not load a page within %v", waitFor)
	}
	tab.wait("the second page, through the link", `location.pathname.endsWith('/page2.html') && document.readyState === 'complete'`)
	tab.wait("the second page's stylesheet, image and script", loaded("Site page 2"))
	tab.screenshot("site-page2.png")

	// The key, as the browser got it: refused on another port or machine.
	keyPart := prefix[strings.Index(prefix, "/~/"):]
	base := "http://" + m.addr + "/api/runtimes/" + rid + "/machines/"
	for _, c := range []struct {
		url    string
		status int
	}{
		{prefix + "/style.css", 200},
		{base + name + "/ports/" + strconv.Itoa(webPort) + "/style.css", 401},                 // no key, no ticket
		{base + name + "/ports/" + strconv.Itoa(webPort) + "/~/garbage/style.css", 401},       // a made-up key
		{base + name + "/ports/" + strconv.Itoa(detPort) + keyPart + "/", 403},                // another port
		{base + "other-machine/ports/" + strconv.Itoa(webPort) + keyPart + "/style.css", 403}, // another machine
		{prefix + "/.hidden.html", 404},                                                       // the server's own refusal
	} {
		resp, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("GET %s: %d, want %d", c.url, resp.StatusCode, c.status)
		}
	}

	// The detected port, from its own link.
	det := open(detLink)
	det.wait("the detected port's page", `document.getElementById('p')?.textContent === 'served from a detected port' && location.pathname.includes('/ports/`+strconv.Itoa(detPort)+`/~/')`)
	for _, pg := range []*page{p, tab, det} {
		if ex := pg.exceptions(); len(ex) > 0 {
			t.Errorf("a page threw:\n%s", strings.Join(ex, "\n"))
		}
	}
}
