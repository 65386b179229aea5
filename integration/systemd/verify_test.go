//go:build systemd

package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// TestVerifyUnits: make verify-units' script passes the shipped units and
// fails each deliberately broken copy, also where systemd-analyze itself
// exits 0 (an unknown key, a bad value: it only warns).
func TestVerifyUnits(t *testing.T) {
	testsupport.RequireBinary(t, "systemd-analyze")
	script := filepath.Join(repoRoot(), "scripts", "verify-units.sh")
	shipped := filepath.Join(repoRoot(), "deploy", "systemd")
	verify := func(dir string) (string, error) {
		cmd := exec.Command(script, dir)
		cmd.Env = append(os.Environ(), "BGD="+built.bgd)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if out, err := verify(shipped); err != nil {
		t.Fatalf("the shipped units fail verification: %v\n%s", err, out)
	}
	for _, c := range []struct{ name, file, from, to, want string }{
		{"unknown key", "bgd-proxy@.service", "ProtectSystem=strict", "ProtectSystm=strict", "Unknown key"},
		{"key in the wrong section", "bgd-up@.service", "RemainAfterExit=yes", "RemainAfterExit=yes\n[Unit]\nKillMode=process", "Unknown key"},
		{"bad value", "bgd-proxy@.service", "Restart=always", "Restart=sometimes", "restart specifier"},
		{"unknown section", "bgd-health.timer", "[Timer]", "[Timers]", "Unknown section"},
		{"missing binary", "bgd-health.service", "ExecStart=/usr/local/bin/bgd", "ExecStart=/usr/local/bin/no-such-bgd", "is not executable"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			entries, err := os.ReadDir(shipped)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(shipped, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				s := string(b)
				if e.Name() == c.file {
					if !strings.Contains(s, c.from) {
						t.Fatalf("%s has no %q to break", c.file, c.from)
					}
					s = strings.Replace(s, c.from, c.to, 1)
				}
				if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := verify(dir)
			if err == nil || !strings.Contains(out, c.want) {
				t.Fatalf("a copy with a %s in %s: err %v, output lacks %q:\n%s", c.name, c.file, err, c.want, out)
			}
		})
	}
}
