//go:build !linux

package wsrpc

// Poller is Linux's only (idle_linux.go): elsewhere there is no direct
// reader, and ServeRaw reads on a goroutine.
type Poller struct{}

func (p *Poller) add(int, func()) bool { return false }
func (p *Poller) remove(int) bool      { return false }

// Wait returns at once.
func (p *Poller) Wait() {}
