package cli

import (
	"fmt"
	"os"

	"github.com/porthole-dev/porthole/protocol"
	runtimecopier "github.com/porthole-dev/porthole/runtime-copier"
)

// runCopy is `porthole copy [-to DIR] [-payload FILE]...`.
func runCopy(args []string, e env, stdout, stderr *os.File) error {
	fs := newFlagSet("copy", stderr)
	def := e[runtimecopier.EnvDir]
	if def == "" {
		def = runtimecopier.DefaultDir
	}
	to := fs.String("to", def, "destination directory (default $"+runtimecopier.EnvDir+", else "+runtimecopier.DefaultDir+")")
	var payloads listFlag
	fs.Var(&payloads, "payload", "extra file to copy beside the binary (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("copy takes no arguments; got %q", fs.Args())}
	}
	r, err := runtimecopier.Copy(runtimecopier.Options{Dest: *to, Payloads: payloads, Version: Version, ProtocolVersion: protocol.Version})
	if err != nil {
		return err
	}
	if r.Written {
		fmt.Fprintf(stdout, "copied porthole %s (sha256 %s) to %s\n", Version, r.Manifest.Binary.SHA256, *to)
	} else {
		fmt.Fprintf(stdout, "%s already holds porthole %s (sha256 %s): nothing written\n", *to, Version, r.Manifest.Binary.SHA256)
	}
	return nil
}
