package testsupport

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNotInProduct checks that no package of the module but the benchmark
// imports this one outside its tests (directly or through another package):
// product code never carries test fixtures.
func TestNotInProduct(t *testing.T) {
	const self = "github.com/bgd-dev/bgd/internal/testsupport"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Deps \" \"}}", "github.com/bgd-dev/bgd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, ": ")
		if pkg == self || pkg == "github.com/bgd-dev/bgd/integration/bench" {
			continue
		}
		for _, d := range strings.Fields(deps) {
			if d == self {
				t.Errorf("%s imports %s: only tests and integration/bench may", pkg, self)
			}
		}
	}
}
