// Package faults is porthole's fault-injection suite: porthole-master,
// bootstrappers, agents and `porthole exec` run as real processes in
// two network namespaces joined by a veth pair (the master's and the
// machines'), and the tests partition the link, drop packets, delay and
// cut connections, and kill processes, then check exactly what arrived.
//
// The tests are behind the build tag faults (`make test` does not run
// them) and need root, iproute2 and iptables: `make faults` installs
// what is missing and runs them. docs/reliability.md lists the
// scenarios and the figures measured.
package faults
