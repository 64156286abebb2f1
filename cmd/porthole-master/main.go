// Command porthole-master receives every machine's statuses and logs,
// serves them to clients and a web dashboard, and proxies terminal
// sessions to the agents. See docs/master.md.
package main

import (
	"os"

	"github.com/porthole-dev/porthole/master/mastercli"
)

func main() { os.Exit(mastercli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
