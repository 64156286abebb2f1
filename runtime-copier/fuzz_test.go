package runtimecopier

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzManifest: the porthole.json a previous copy (or anyone with the
// volume) left in the destination is read back by the next copy. Whatever
// it holds, Copy does not panic, and it writes nothing only when the
// files there are byte for byte this copy's; otherwise the copy is
// rewritten and the manifest is this copy's.
func FuzzManifest(f *testing.F) {
	for _, s := range []string{
		`{"version":"v1","protocolVersion":"1.0","os":"linux","arch":"amd64","binary":{"name":"porthole","sha256":"x","size":6},"payloads":[{"name":"p.txt","sha256":"y","size":1}]}`,
		`{"version":"v1","binary":{"name":"../../etc/passwd"},"payloads":[{"name":"/etc/shadow"}]}`,
		`{"payloads":null}`, `[]`, `{`, `null`,
	} {
		f.Add([]byte(s))
	}
	src := f.TempDir()
	bin := filepath.Join(src, "bin")
	payload := filepath.Join(src, "p.txt")
	if err := os.WriteFile(bin, []byte("binary"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(payload, []byte("p"), 0o644); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, manifest []byte) {
		dest := t.TempDir()
		if err := os.WriteFile(filepath.Join(dest, ManifestName), manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		o := Options{Dest: dest, Source: bin, Payloads: []string{payload}, Version: "v1", ProtocolVersion: "1.0"}
		r, err := Copy(o)
		if err != nil {
			t.Fatalf("Copy over manifest %q: %v", manifest, err)
		}
		if !r.Written {
			t.Fatalf("manifest %q: nothing written, but the destination held no copy", manifest)
		}
		ents, _ := os.ReadDir(dest)
		if len(ents) != 3 {
			t.Fatalf("manifest %q: destination holds %d files; want the binary, the payload and the manifest", manifest, len(ents))
		}
	})
}
