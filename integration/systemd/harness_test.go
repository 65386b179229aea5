//go:build systemd

// Package systemd tests bgd's shipped systemd units (deploy/systemd) and its
// Ansible role (deploy/ansible) on a real systemd: PID 1 of a container of
// the image bgd/systemd-host (make images), one container per test. Behind
// the build tag systemd: `make systemd-test` runs them, `go test ./...`
// never builds them.
//
// The containers run unprivileged, with CAP_SYS_ADMIN added so that systemd
// can really build the units' sandboxes (ProtectSystem=, PrivateTmp=, ...):
// without it systemd silently skips the mount namespace in a container, and
// the hardening would go untested.
//
// Ports: every container has its own network namespace, so the ports the
// tests use inside it (fixed below, never 5004-5006) cannot collide with
// anything on the host or in another test's container.
package systemd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/integration/systemd/loadreport"
	"github.com/bgd-dev/bgd/internal/testsupport"
)

const (
	image = "bgd/systemd-host"
	// Inside each test's container (its own network namespace).
	proxyPort = 18080
	bluePort  = 18081
	greenPort = 18082
)

// built holds the host-built binaries every test copies in.
var built struct{ bgd, loader string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bgd-systemd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built.bgd, built.loader = filepath.Join(dir, "bgd"), filepath.Join(dir, "loader")
	root := repoRoot()
	for pkg, out := range map[string]string{"./cmd/bgd": built.bgd, "./integration/systemd/testdata/loader": built.loader} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, b)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	printRecoveries()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the module's root (this file is integration/systemd/harness_test.go).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// requireDocker returns docker's path once docker answers and the image is
// built; a developer machine without them skips loudly, CI fails.
func requireDocker(t *testing.T) string {
	t.Helper()
	docker := testsupport.RequireBinary(t, "docker")
	if b, err := exec.Command(docker, "image", "inspect", "--format", "{{.Id}}", image).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("image %s is not there (make images builds it): %s", image, strings.TrimSpace(string(b)))
		if testsupport.InCI() {
			t.Fatal(msg)
		}
		t.Skip("SKIP (loud): " + msg)
	}
	return docker
}

var seq atomic.Int64

// host is one container with systemd as PID 1.
type host struct {
	t      *testing.T
	docker string
	name   string
}

// newHost starts a container of the image, removed with its volumes when
// the test ends, and waits until systemd has booted it.
func newHost(t *testing.T) *host {
	t.Helper()
	docker := requireDocker(t)
	name := fmt.Sprintf("bgdsd-%d-%d-%s", os.Getpid(), seq.Add(1), strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")))
	if len(name) > 60 {
		name = name[:60]
	}
	h := &host{t: t, docker: docker, name: name}
	out, err := exec.Command(docker, "run", "-d", "--name", name, "--hostname", "bgd-lb",
		"--cap-add", "SYS_ADMIN",
		"--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
		image).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("journal of %s (last 40 lines):\n%s", name, h.out("journalctl", "--no-pager", "-n", "40"))
		}
		if b, err := exec.Command(docker, "rm", "-f", "-v", name).CombinedOutput(); err != nil {
			t.Errorf("docker rm %s: %v\n%s", name, err, b)
		}
	})
	h.waitBooted(60 * time.Second)
	return h
}

// waitBooted waits until `systemctl is-system-running` says running (a
// degraded boot fails the test, naming the failed units).
func (h *host) waitBooted(limit time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	var state string
	for time.Now().Before(deadline) {
		state, _ = h.exec("systemctl", "is-system-running")
		switch state {
		case "running":
			return
		case "degraded":
			h.t.Fatalf("systemd booted degraded:\n%s", h.out("systemctl", "--failed", "--no-legend"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.t.Fatalf("systemd not running after %s: %q", limit, state)
}

// exec runs a command in the container; it returns its trimmed combined
// output and its error (an *exec.ExitError for a non-zero exit).
func (h *host) exec(argv ...string) (string, error) {
	cmd := exec.Command(h.docker, append([]string{"exec", h.name}, argv...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return strings.TrimSpace(b.String()), err
}

// split runs a command in the container and returns its stdout and stderr
// apart (bgd --json: the object on stdout, logs on stderr).
func (h *host) split(argv ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(h.docker, append([]string{"exec", h.name}, argv...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// must runs a command that has to succeed and returns its output.
func (h *host) must(argv ...string) string {
	h.t.Helper()
	out, err := h.exec(argv...)
	if err != nil {
		h.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

// out is exec for diagnostics: the output, with the error appended.
func (h *host) out(argv ...string) string {
	out, err := h.exec(argv...)
	if err != nil {
		out += fmt.Sprintf("\n(%v)", err)
	}
	return out
}

// cp copies a host file into the container.
func (h *host) cp(src, dst string) {
	h.t.Helper()
	if b, err := exec.Command(h.docker, "cp", src, h.name+":"+dst).CombinedOutput(); err != nil {
		h.t.Fatalf("docker cp %s %s: %v\n%s", src, dst, err, b)
	}
}

// write puts content in a file of the container.
func (h *host) write(path, content string, mode os.FileMode) {
	h.t.Helper()
	f := filepath.Join(h.t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(f, []byte(content), mode); err != nil {
		h.t.Fatal(err)
	}
	h.must("mkdir", "-p", filepath.Dir(path))
	h.cp(f, path)
	h.must("chmod", fmt.Sprintf("%o", mode), path)
}

// journal returns a unit's journal.
func (h *host) journal(unit string) string {
	return h.out("journalctl", "--no-pager", "-o", "short-precise", "-u", unit)
}

// waitFor polls cond every 100 ms until it holds or limit passes.
func (h *host) waitFor(limit time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("after %s: still not %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// installBGD puts the host-built bgd and the loader in the container, the
// shipped units in /etc/systemd/system, and cfg as /etc/bgd/bluegreen.yml.
func (h *host) installBGD(cfg string) {
	h.t.Helper()
	h.cp(built.bgd, "/usr/local/bin/bgd")
	h.cp(built.loader, "/usr/local/bin/bgd-test-loader")
	units, err := filepath.Glob(filepath.Join(repoRoot(), "deploy", "systemd", "*"))
	if err != nil || len(units) == 0 {
		h.t.Fatalf("no shipped units in deploy/systemd: %v", err)
	}
	for _, u := range units {
		h.cp(u, "/etc/systemd/system/"+filepath.Base(u))
	}
	h.write("/etc/bgd/bluegreen.yml", cfg, 0o640)
	h.must("systemctl", "daemon-reload")
}

// bgd runs bgd in the container as the units do (BG_CONFIG set); stdout
// and stderr apart.
func (h *host) bgd(args ...string) (string, string, error) {
	return h.split(append([]string{"env", "BG_CONFIG=/etc/bgd/bluegreen.yml", "/usr/local/bin/bgd"}, args...)...)
}

// answer is which slot answers through the load balancer on proxyPort in
// the container (the demo app's own X-Slot header, which every driver
// passes on), or an error.
func (h *host) answer() (string, error) {
	return h.exec("curl", "-sf", "-m", "2", "-o", "/dev/null", "-w", "%header{x-slot}", fmt.Sprintf("http://127.0.0.1:%d/", proxyPort))
}

// config is the test's bluegreen.yml: the demo app (bgd itself) on the
// test's ports behind the builtin proxy; extra is added to the service.
func config(extra string) string {
	return serviceConfig(fmt.Sprintf(`builtin: {listen: "127.0.0.1:%d"}`, proxyPort), extra)
}

// serviceConfig is the test's bluegreen.yml with lb as the service's lb:
// settings (indented below it) and extra added to the service.
func serviceConfig(lb, extra string) string {
	return fmt.Sprintf(`state_dir: /var/lib/bgd
services:
  app:
    command: ["/usr/local/bin/bgd", "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"]
    blue: {port: %d}
    green: {port: %d}
    stop_grace: 2s
    lb:
      %s
%s`, bluePort, greenPort, lb, extra)
}

// load is the loader running in the container for a fixed time.
type load struct {
	h    *host
	file string
	done chan error
	out  *bytes.Buffer
}

// startLoad sends requests through the proxy from inside the container for d.
func (h *host) startLoad(d time.Duration) *load {
	h.t.Helper()
	l := &load{h: h, file: fmt.Sprintf("/tmp/load-%d.json", seq.Add(1)), done: make(chan error, 1), out: new(bytes.Buffer)}
	cmd := exec.Command(h.docker, "exec", h.name, "/usr/local/bin/bgd-test-loader",
		"-url", fmt.Sprintf("http://127.0.0.1:%d/", proxyPort), "-c", "4", "-d", d.String(), "-out", l.file)
	cmd.Stdout, cmd.Stderr = l.out, l.out
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { l.done <- cmd.Wait() }()
	time.Sleep(300 * time.Millisecond) // the clients are sending
	return l
}

// wait returns the loader's report once it ends.
func (l *load) wait() loadreport.Report {
	l.h.t.Helper()
	if err := <-l.done; err != nil {
		l.h.t.Fatalf("loader: %v\n%s", err, l.out)
	}
	var r loadreport.Report
	if err := json.Unmarshal([]byte(l.h.must("cat", l.file)), &r); err != nil {
		l.h.t.Fatalf("loader report: %v", err)
	}
	if r.Sent == 0 {
		l.h.t.Fatal("the loader sent no request")
	}
	return r
}

// at runs a command in the container (a kill) and returns the moment it
// began, read in the container just before (containers share the host's
// clock; a docker exec takes tens of milliseconds to start).
func (h *host) at(argv ...string) time.Time {
	h.t.Helper()
	out := h.must(append([]string{"sh", "-c", `date +%s%N; exec "$@"`, "sh"}, argv...)...)
	ns, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		h.t.Fatalf("%s: %q: %v", strings.Join(argv, " "), out, err)
	}
	return time.Unix(0, ns)
}

// killUnderLoad SIGKILLs a unit's processes (systemctl kill) while the
// loader sends requests, waits until systemd runs its main process again,
// records the recovery as what, and fails the test unless requests are
// answered again within 2 s of the kill.
func (h *host) killUnderLoad(unit, what string) {
	h.t.Helper()
	oldPID := h.prop(unit, "MainPID")
	if oldPID == "0" || oldPID == "" {
		h.t.Fatalf("%s has no main process:\n%s", unit, h.out("systemctl", "status", "--no-pager", unit))
	}
	l := h.startLoad(5 * time.Second)
	time.Sleep(time.Second)
	killAt := h.at("systemctl", "kill", "-s", "KILL", unit)
	h.waitFor(3*time.Second, unit+" running again", func() bool {
		pid := h.prop(unit, "MainPID")
		return h.prop(unit, "ActiveState") == "active" && pid != oldPID && pid != "0"
	})
	back := h.unitTime(unit, "ExecMainStartTimestamp").Sub(killAt)
	r := l.wait()
	served, failed := r.After(killAt)
	h.t.Logf("outages relative to the kill of %s: %s", unit, r.Describe(killAt))
	record(h.t, recovery{what: what, back: back, served: served, sent: r.Sent, failed: failed})
	if served < 0 || served > 2*time.Second {
		h.t.Fatalf("requests answered again %s after %s was killed, want within 2 s (%+v)", ms(served), unit, r.Outages)
	}
}

// A measured recovery, printed in one table at the end of the run.
type recovery struct {
	test, what   string
	back, served time.Duration // back: unit active again; served: requests answered again
	sent, failed int
}

var (
	recoveriesMu sync.Mutex
	recoveries   []recovery
)

// record logs a recovery in the test's log and keeps it for the table.
func record(t *testing.T, r recovery) {
	r.test = t.Name()
	load := "no load"
	if r.sent > 0 {
		load = fmt.Sprintf("%d requests sent, %d failed", r.sent, r.failed)
	}
	t.Logf("recovery: %s: unit back after %s, requests answered again after %s; %s", r.what, ms(r.back), ms(r.served), load)
	recoveriesMu.Lock()
	recoveries = append(recoveries, r)
	recoveriesMu.Unlock()
}

// ms prints a duration in milliseconds: "never" when negative, "-" for 0
// (not measured, or no request failed).
func ms(d time.Duration) string {
	switch {
	case d < 0:
		return "never"
	case d == 0:
		return "-"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// printRecoveries prints the run's recoveries as a table (TestMain).
func printRecoveries() {
	if len(recoveries) == 0 {
		return
	}
	fmt.Printf("\nrecovery times measured under systemd (requests from 4 clients inside the container, new connection each):\n")
	fmt.Printf("%-34s %-52s %12s %12s %8s %8s\n", "test", "fault", "unit back", "answered", "sent", "failed")
	for _, r := range recoveries {
		sent, failed := "-", "-" // no load during a container restart
		if r.sent > 0 {
			sent, failed = fmt.Sprint(r.sent), fmt.Sprint(r.failed)
		}
		fmt.Printf("%-34s %-52s %12s %12s %8s %8s\n", r.test, r.what, ms(r.back), ms(r.served), sent, failed)
	}
}

// lineWith is the first line of s containing sub ("" when none).
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
