// Package e2e runs porthole in a real container engine: it builds the
// copier and master images and two application images (FROM scratch with
// busybox-static; a Debian minbase root with glibc and bash), plays the
// shipped deploy/kubernetes manifests with `podman kube play` and checks
// the injection end to end; it also runs the arm64 binary under
// qemu-user. Its tests carry the build tag `engine` and need root:
//
//	make e2e-engine
//
// which installs podman and the rest from Debian, then runs
// `go test -tags engine ./deploy/e2e/`. scripts/engine/engine.sh keeps
// podman in private mount and network namespaces and applies only the
// workarounds the machine needs; docs/injection.md lists what is checked.
package e2e
