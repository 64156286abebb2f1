package proc

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// childDefaults are the signals every child gets with their default
// disposition, whatever ours was when we started.
//
// A signal ignored when a program starts stays ignored in what it execs:
// the kernel resets only the signals a process handles, and Go keeps an
// inherited SIG_IGN for SIGHUP and SIGINT (it handles the others itself). porthole started
// under nohup, or as `porthole agent &` from a script (which ignores
// SIGINT and SIGQUIT), would hand that on to every shell and command it
// runs: Ctrl-C would not stop a command in a terminal, a hangup would not
// end a shell, `yes | head` would not end on SIGPIPE, and a non-interactive
// sh cannot even trap a signal ignored on entry. So we handle them instead
// (Go then resets handled signals to their defaults in each child) and
// drop what arrives: for this process they stay as good as ignored.
var childDefaults = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2}

var resetOnce sync.Once

// ResetIgnoredSignals makes the signals of childDefaults that this
// process ignores handled (and dropped), once, so that its children get
// their defaults. Start calls it; call it before starting a child any
// other way.
func ResetIgnoredSignals() {
	resetOnce.Do(func() {
		var ignored []os.Signal
		for _, s := range childDefaults {
			if signal.Ignored(s) {
				ignored = append(ignored, s)
			}
		}
		if len(ignored) > 0 {
			// A full channel drops the signal: nobody reads this one.
			signal.Notify(make(chan os.Signal, 1), ignored...)
		}
	})
}
