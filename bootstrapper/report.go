package bootstrapper

import (
	"context"
	"time"

	"github.com/porthole-dev/porthole/protocol/che"
)

// ReportFailure tells the master at o.PushURL that the bootstrap failed
// before any installer started (a bad config, a bad flag value), with
// cause's text: one bootstrapper/statusChanged FAILED, on a connection
// tried as the first one is (at once, then every o.ReconnectPeriod) for as
// long as the final flush (FlushTimeout), and acknowledged. Che's
// bootstrapper told the master through the installer's FAILED; without
// this, the master would wait for its own start timeout, the reason only
// in the machine's local log. It starts nothing. Of o it uses PushURL,
// Token, TLS, MachineName, RuntimeID, ReconnectPeriod and Logger.
func ReportFailure(ctx context.Context, o Options, cause error) error {
	o.defaults()
	enc, err := newEncoder(o.MachineName, o.RuntimeID, newBootID(), nil)
	if err != nil {
		return err
	}
	p := newPusher("-push-endpoint", o.PushURL, o.Token, o.TLS, nil, o.ReconnectPeriod, o.Logger)
	defer p.cancel()
	deadline := time.Now().Add(FlushTimeout(o.ReconnectPeriod))
	c, err := p.connect(ctx, deadline)
	if err != nil {
		return err
	}
	defer c.close(true)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return c.sendOne(ctx, enc.bootstrapperStatus(che.StatusFailed, cause.Error(), false).number(1), 1)
}
