package proc

import (
	"context"
	"sync"
	"syscall"
	"time"
)

// Target is what Stop stops: a Group, a Child, or a process of the agent.
type Target interface {
	// Signal sends sig; a target that is already gone is not an error.
	Signal(sig syscall.Signal) error
	// Wait returns nil once the target is gone, or ctx's cause when ctx
	// ends first.
	Wait(ctx context.Context) error
}

// KillWait bounds how long Stop waits for a target after SIGKILL.
const KillWait = 5 * time.Second

// Stop stops the targets together: each gets the signals in first
// (SIGTERM when none is given), in order; then they have up to grace, or
// until ctx ends, to be gone. Whatever is left gets SIGKILL, and Stop waits
// up to KillWait more for it. Stop returns when every target is gone or its
// waits have run out.
func Stop(ctx context.Context, grace time.Duration, targets []Target, first ...syscall.Signal) {
	if len(first) == 0 {
		first = []syscall.Signal{syscall.SIGTERM}
	}
	for _, t := range targets {
		for _, sig := range first {
			t.Signal(sig)
		}
	}
	graceCtx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() {
			if t.Wait(graceCtx) == nil {
				return
			}
			t.Signal(syscall.SIGKILL)
			killCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), KillWait)
			defer cancel()
			t.Wait(killCtx)
		})
	}
	wg.Wait()
}
