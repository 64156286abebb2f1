// Package webtest holds the end-to-end test of the browser terminal
// (web/terminal): a real headless Chromium, driven with chromedp, loads the
// page from an in-process agent, types into xterm.js, resizes the window and
// reloads the page to reattach. See docs/browser.md.
//
// The test needs /usr/bin/chromium (Debian packages chromium and
// chromium-driver) and, when web/terminal/dist is missing or older than its
// sources, node and npm to build the page. It fails, and does not skip,
// when either is missing.
package webtest
