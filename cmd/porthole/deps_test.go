package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the injected binary small and free of the master's and
// the tests' dependencies: porthole runs in every container, so the
// store, the token library, the browser driver and Kubernetes' types must
// never be linked into it.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	bad := []string{"go.etcd.io/bbolt", "github.com/golang-jwt/", "github.com/prometheus/", "github.com/chromedp/", "k8s.io/", "sigs.k8s.io/", "github.com/porthole-dev/porthole/master"}
	for _, dep := range strings.Fields(string(out)) {
		for _, b := range bad {
			if strings.HasPrefix(dep, b) {
				t.Errorf("cmd/porthole imports %s (through some package): keep %s out of the injected binary", dep, b)
			}
		}
	}
}
