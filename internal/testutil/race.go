//go:build race

package testutil

// Race reports whether the test binary was built with -race; a binary a
// test builds itself (go build) should be built the same way.
const Race = true
