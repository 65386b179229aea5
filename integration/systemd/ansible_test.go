//go:build systemd

package systemd

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// playbooks runs deploy/ansible's playbooks against one test container over
// the community.docker.docker connection, writing nothing outside the
// test's temporary directory.
type playbooks struct {
	t         *testing.T
	h         *host
	bin       string
	dir, inv  string
	extraVars []string
}

func newPlaybooks(t *testing.T, h *host, cfg string) *playbooks {
	t.Helper()
	bin := testsupport.RequireBinary(t, "ansible-playbook")
	dir := t.TempDir()
	p := &playbooks{t: t, h: h, bin: bin, dir: dir, inv: filepath.Join(dir, "inventory.ini")}
	write := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	write("inventory.ini", fmt.Sprintf("[bgd]\n%s ansible_connection=community.docker.docker ansible_python_interpreter=/usr/bin/python3\n", h.name))
	p.extraVars = []string{"-e", "bgd_binary_src=" + built.bgd, "-e", "bgd_config_src=" + write("bluegreen.yml", cfg)}
	for _, d := range []string{"home", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// recap is a play's PLAY RECAP, summed over its hosts.
type recap struct{ ok, changed, failed, unreachable int }

var recapLine = regexp.MustCompile(`(?m)^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// run runs one playbook of deploy/ansible with extra -e arguments; it
// returns the output, the recap and the error of ansible-playbook.
func (p *playbooks) run(playbook string, extra ...string) (string, recap, error) {
	p.t.Helper()
	args := append([]string{"-i", p.inv, filepath.Join(repoRoot(), "deploy", "ansible", playbook)}, p.extraVars...)
	cmd := exec.Command(p.bin, append(args, extra...)...)
	cmd.Env = append(os.Environ(),
		"HOME="+filepath.Join(p.dir, "home"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(p.dir, "tmp"),
		"ANSIBLE_HOST_KEY_CHECKING=False",
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_RETRY_FILES_ENABLED=False",
		"ANSIBLE_STDOUT_CALLBACK=default",
	)
	b, err := cmd.CombinedOutput()
	out := string(b)
	var r recap
	m := recapLine.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		p.t.Fatalf("ansible-playbook %s: no PLAY RECAP (%v):\n%s", playbook, err, out)
	}
	for _, l := range m {
		n := func(i int) int { v, _ := strconv.Atoi(l[i]); return v }
		r.ok += n(1)
		r.changed += n(2)
		r.unreachable += n(3)
		r.failed += n(4)
	}
	return out, r, err
}

// must runs a playbook that has to succeed and returns its recap.
func (p *playbooks) must(playbook string, extra ...string) recap {
	p.t.Helper()
	out, r, err := p.run(playbook, extra...)
	if err != nil || r.failed > 0 || r.unreachable > 0 {
		p.t.Fatalf("ansible-playbook %s %v: %v, recap %+v:\n%s", playbook, extra, err, r, out)
	}
	p.t.Logf("ansible-playbook %s %s: ok=%d changed=%d", playbook, strings.Join(extra, " "), r.ok, r.changed)
	return r
}

// bgdError is what the failed task's output says bgd printed: its exit
// code and its stderr.
func bgdError(out string) string {
	var res struct {
		RC     int    `json:"rc"`
		Stderr string `json:"stderr"`
	}
	_, js, ok := strings.Cut(lineWith(out, "fatal:"), "=> ")
	if !ok || json.Unmarshal([]byte(js), &res) != nil {
		return "(no failed task in the output)"
	}
	return fmt.Sprintf("rc %d: %s", res.RC, res.Stderr)
}

// releases puts three releases of an app in the container: initial and v2
// run the demo app, broken exits at once with a message on stderr.
func releases(h *host) {
	h.t.Helper()
	good := "#!/bin/sh\nexec /usr/local/bin/bgd demo-app \"$@\"\n"
	h.write("/srv/app/releases/initial/server", good, 0o755)
	h.write("/srv/app/releases/v2/server", good, 0o755)
	h.write("/srv/app/releases/broken/server", "#!/bin/sh\necho 'broken: cannot open /srv/app/data/db.sqlite' >&2\nexit 3\n", 0o755)
}

// releasesConfig runs the releases of releases() behind the builtin proxy.
func releasesConfig() string {
	return fmt.Sprintf(`state_dir: /var/lib/bgd
services:
  app:
    command: ["/srv/app/releases/{{.Release}}/server", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"]
    blue: {port: %d}
    green: {port: %d}
    stop_grace: 2s
    health: {timeout: 5s}
    lb:
      builtin: {listen: "127.0.0.1:%d"}
`, bluePort, greenPort, proxyPort)
}

// TestAnsibleRole: site.yml installs bgd with the role and brings the
// service up; its second run changes nothing; deploy.yml, rollback.yml and
// status.yml report bgd's own "changed", and a deploy of a release that
// cannot start fails the play with bgd's message, leaving traffic alone.
func TestAnsibleRole(t *testing.T) {
	h := newHost(t)
	releases(h)
	p := newPlaybooks(t, h, releasesConfig())

	if r := p.must("site.yml"); r.changed == 0 {
		t.Fatalf("the first site.yml changed nothing: %+v", r)
	}
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Fatalf("after site.yml, through the proxy: %q, %v", by, err)
	}
	for _, u := range []string{"bgd-proxy@app.service", "bgd-up@app.service", "bgd-health.timer"} {
		if en := h.out("systemctl", "is-enabled", u); en != "enabled" {
			t.Errorf("%s is %q after site.yml, want enabled", u, en)
		}
	}
	if r := p.must("site.yml"); r.changed != 0 {
		t.Fatalf("the second site.yml changed %d tasks, want 0", r.changed)
	}

	if r := p.must("deploy.yml", "-e", "release=v2"); r.changed != 1 {
		t.Fatalf("deploy.yml of v2: changed=%d, want 1", r.changed)
	}
	if by, err := h.answer(); by != "green" || err != nil {
		t.Fatalf("after deploy.yml of v2: %q, %v", by, err)
	}
	if r := p.must("deploy.yml", "-e", "release=v2"); r.changed != 0 {
		t.Fatalf("deploy.yml of the live release: changed=%d, want 0", r.changed)
	}

	if r := p.must("rollback.yml"); r.changed != 1 {
		t.Fatalf("rollback.yml: changed=%d, want 1", r.changed)
	}
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Fatalf("after rollback.yml: %q, %v", by, err)
	}
	out, r, err := p.run("status.yml")
	if err != nil || r.changed != 0 || !strings.Contains(out, "app: active blue, load balancer routes to blue") {
		t.Fatalf("status.yml: %v, recap %+v:\n%s", err, r, out)
	}

	// The idle slot is green now: the broken release fails there.
	out, r, err = p.run("deploy.yml", "-e", "release=broken")
	t.Logf("deploy.yml of a broken release: %v, recap %+v; %s", err, r, bgdError(out))
	if err == nil || r.failed != 1 {
		t.Fatalf("deploy.yml of a release that cannot start: %v, recap %+v, want a failed play:\n%s", err, r, out)
	}
	for _, want := range []string{"broken: cannot open /srv/app/data/db.sqlite", `"rc": 1`} {
		if !strings.Contains(out, want) {
			t.Fatalf("the failed play's output lacks %q (bgd's message and exit code):\n%s", want, out)
		}
	}
	if by, err := h.answer(); by != "blue" || err != nil {
		t.Fatalf("after the failed deploy, traffic moved: %q, %v", by, err)
	}

	// Bad input: bgd exits 2 before anything runs, and the play says why.
	out, r, err = p.run("deploy.yml", "-e", "release=../x")
	if err == nil || r.failed != 1 || !strings.Contains(out, `"rc": 2`) || !strings.Contains(out, "../x") {
		t.Fatalf("deploy.yml of the release ../x: %v, recap %+v, want a failed play with bgd's exit 2:\n%s", err, r, out)
	}
	t.Logf("deploy.yml of a bad release name: %s", bgdError(out))
}
