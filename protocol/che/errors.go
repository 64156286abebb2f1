package che

import "fmt"

// Che's error sentences, as its bootstrapper words them
// (booter/installations.go) and Che's master shows them: the error of an
// installer's FAILED status and of the bootstrapper's FAILED that follows.
// They are capitalised and quoted as Che's, which is right for the wire
// and unusual for Go errors: that is why they are built here.

// ErrCouldNotStart: the installer's script could not be started
// (porthole's; Che's bootstrapper exits instead).
func ErrCouldNotStart(installer string, err error) error {
	return fmt.Errorf("Installation of '%s' could not start: %w", installer, err)
}

// ErrExitCode: an installer without servers exited with code != 0.
func ErrExitCode(installer string, code int) error {
	return fmt.Errorf("Exit code for '%s' installation is '%d' while expected to be 0", installer, code)
}

// ErrTimeoutCompleted: an installer without servers did not exit in time.
func ErrTimeoutCompleted(installer string) error {
	return fmt.Errorf("Timeout reached before installation of '%s' completed", installer)
}

// ErrTimeoutFinished: an installer's servers were not up in time.
func ErrTimeoutFinished(installer string) error {
	return fmt.Errorf("Timeout reached before installation of '%s' finished", installer)
}

// ErrScriptFailed: an installer with servers exited with code != 0 before
// they were up.
func ErrScriptFailed(installer string, code int) error {
	return fmt.Errorf("Installation '%s' failed, script exit code is %d", installer, code)
}

// ErrServersNotAvailable: an installer with servers exited with code 0
// and its servers are not up.
func ErrServersNotAvailable(installer string) error {
	return fmt.Errorf("Process of installation '%s' exit code is 0 but servers are not available", installer)
}

// ErrInterrupted: the bootstrapper was stopped while installer ran
// (porthole's); cause says why.
func ErrInterrupted(installer string, cause error) error {
	return fmt.Errorf("Installation of '%s' interrupted: %w", installer, cause)
}

// LostText is the text of the installer/log event that stands for n log
// lines dropped while the bootstrapper's spool was full (porthole's).
func LostText(n uint64) string {
	return fmt.Sprintf("[porthole] %d log line(s) lost: the bootstrapper's spool was full while the master could not be reached", n)
}

// UndeliveredText is the text of the installer/log event that stands for n
// events the bootstrapper could not have acknowledged before it exited
// (porthole's): sent on one last connection, when one can be made.
func UndeliveredText(n uint64) string {
	return fmt.Sprintf("[porthole] %d event(s) not delivered: the bootstrapper exited before the master acknowledged them (some may have arrived)", n)
}

// RefusedText is the text of the journal entry the master writes for an
// event it refused because it was larger than its limit (porthole's).
func RefusedText(size, limit int64) string {
	return fmt.Sprintf("[porthole] an event of %d bytes was refused: above the master's limit of %d bytes (-max-message)", size, limit)
}
