package testsupport

import (
	"os"
	"os/exec"
	"testing"
)

// FindBinary returns the path of a system program, or "" when it is not
// installed (Debian puts nginx and haproxy in /usr/sbin, often not in PATH).
func FindBinary(name string) string {
	for _, dir := range []string{"", "/usr/sbin/", "/usr/local/sbin/"} {
		if p, err := exec.LookPath(dir + name); err == nil {
			return p
		}
	}
	return ""
}

// InCI reports whether CI is set: then a missing program is a failure, never
// a skip.
func InCI() bool { return os.Getenv("CI") != "" }

// RequireBinary returns the path of a system program the test needs. On a
// developer machine without it the test skips loudly; in CI (CI set) it fails.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	if p := FindBinary(name); p != "" {
		return p
	}
	if InCI() {
		t.Fatalf("%s is not installed, and CI must not skip: install it (see .ci/run)", name)
	}
	t.Skipf("SKIP (loud): %s is not installed; this integration test did not run", name)
	return ""
}
