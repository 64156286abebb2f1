// Command porthole is the in-container exec agent, its client and the
// bootstrapper. Run under the name "bootstrapper" (a link or a copy, as
// Che's infrastructures call it), it is `porthole bootstrap`.
package main

import (
	"os"
	"path/filepath"

	"github.com/porthole-dev/porthole/cli"
)

func main() {
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "bootstrapper" {
		args = append([]string{"bootstrap"}, args...)
	}
	os.Exit(cli.Main(args, os.Environ()))
}
