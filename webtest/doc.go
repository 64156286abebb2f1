// Package webtest holds the end-to-end tests of the browser pages, in a
// real headless Chromium driven with chromedp:
//
//   - the agent's terminal (web/terminal): the page is loaded from an
//     in-process agent; the test types into xterm.js, resizes the window
//     and reloads the page to reattach. See docs/browser.md.
//   - porthole-master's dashboard (web/dashboard, embedded by
//     master/dashboard): the test builds porthole and porthole-master, runs
//     the master, a machine's agent connected to it through its tunnel and
//     a bootstrapper pushing to it, and checks that the page shows the
//     machine, its installers, servers and logs live, runs a terminal
//     through the master, follows a resize, shows a failure, and survives
//     a restart of the master; its terminal reattaches at its exact
//     offset after the master was killed and restarted, and to the same
//     shell after a reload.
//   - web/shared's unit tests (node --test web/shared).
//
// The tests need /usr/bin/chromium (Debian packages chromium and
// chromium-driver) and, when a page's bundle is missing or older than its
// sources, node and npm to build it. They fail, and do not skip, when
// either is missing.
package webtest
