package testsupport

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestNotInProduct checks that no package of the module but the benchmark
// imports this one, or lb/lbtest, outside its tests (directly or through
// another package): product code never carries test fixtures.
func TestNotInProduct(t *testing.T) {
	testOnly := []string{"github.com/bgd-dev/bgd/internal/testsupport", "github.com/bgd-dev/bgd/lb/lbtest"}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Deps \" \"}}", "github.com/bgd-dev/bgd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, ": ")
		if slices.Contains(testOnly, pkg) || pkg == "github.com/bgd-dev/bgd/integration/bench" {
			continue
		}
		for _, d := range strings.Fields(deps) {
			if slices.Contains(testOnly, d) {
				t.Errorf("%s imports %s: only tests and integration/bench may", pkg, d)
			}
		}
	}
}
