// Command porthole is the in-container exec agent and its client.
package main

import (
	"os"

	"github.com/porthole-dev/porthole/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Environ())) }
