//go:build compose

package compose

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// driver is one LB host of the topology.
type driver struct {
	name, service string
	// url is what the client requests: the load balancer, by service name
	// and with its port (wrk cannot resolve "http": the images have no
	// /etc/services).
	url string
	// keepAliveClean: keep-alive clients see no failure across a flip
	// (every nginx reload closes idle keep-alive connections: README "Zero
	// downtime, measured").
	keepAliveClean bool
	// On a health-check that finds the active slot's process gone, the host
	// (its bluegreen.yml) restarts it (health.max_restarts > 0), or fails
	// over to the standby (failover: true, max_restarts 0), or only reports.
	restarts, failover bool
}

var drivers = []driver{
	{name: "builtin", service: "lb-builtin", url: "http://lb-builtin:5004/", keepAliveClean: true, restarts: true},
	{name: "haproxy", service: "lb-haproxy", url: "http://lb-haproxy:80/", keepAliveClean: true, failover: true},
	{name: "nginx", service: "lb-nginx", url: "http://lb-nginx:80/"},
}

// topo is the topology of this run, brought up by TestMain.
var topo struct {
	project, file string
	// unavailable says why the topology could not run (docker missing, ...).
	unavailable string
	// upErr is a failure to bring it up.
	upErr error
	ids   map[string]string // compose service -> container id
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if msg := prerequisites(); msg != "" {
			topo.unavailable = msg
			return m.Run()
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			topo.upErr = err
			return m.Run()
		}
		topo.file = filepath.Join(root, "docker-compose.yml")
		b := make([]byte, 4)
		rand.Read(b)
		topo.project = fmt.Sprintf("bgdtest%d%s", os.Getpid(), hex.EncodeToString(b))
		began := time.Now()
		topo.upErr = up()
		if topo.upErr == nil {
			fmt.Printf("compose: project %s up and serving in %s\n", topo.project, time.Since(began).Round(time.Millisecond))
		}
		// A test binary that times out panics, and one interrupted dies,
		// without returning here: take the project down first then.
		stopGuard := downOnTimeoutOrSignal()
		code := m.Run()
		stopGuard()
		if code != 0 || topo.upErr != nil {
			logs, _ := composeCmd("logs", "--no-color", "--tail", "40")
			fmt.Printf("compose: the containers' last log lines:\n%s\n", logs)
		}
		if err := down(); err != nil {
			code = 1
		}
		printResults()
		return code
	}()
	os.Exit(code)
}

// down removes this run's project: its containers, network and volumes.
func down() error {
	out, err := composeCmd("down", "-v", "--remove-orphans", "-t", "5")
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose: down failed: %v\n%s\n", err, out)
	}
	return err
}

// downOnTimeoutOrSignal takes the project down and exits when the test
// binary is interrupted (SIGINT, SIGTERM) or 30 s before -timeout would make
// it panic; the returned func disarms it.
func downOnTimeoutOrSignal() func() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var expired <-chan time.Time
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > time.Minute {
			timer := time.NewTimer(d - 30*time.Second)
			expired = timer.C
		}
	}
	stop := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "compose: %v: taking project %s down\n", s, topo.project)
		case <-expired:
			fmt.Fprintf(os.Stderr, "compose: -timeout is 30 s away: taking project %s down\n", topo.project)
		case <-stop:
			return
		}
		logs, _ := composeCmd("logs", "--no-color", "--tail", "40")
		fmt.Printf("compose: the containers' last log lines:\n%s\n", logs)
		down()
		os.Exit(1)
	}()
	return func() { signal.Stop(sigs); close(stop) }
}

// prerequisites returns why the topology cannot run here, or "".
func prerequisites() string {
	for _, bin := range []string{"docker", "docker-compose"} {
		if testsupport.FindBinary(bin) == "" {
			return bin + " is not installed"
		}
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Sprintf("the Docker engine does not answer (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
	for _, img := range []string{"bgd/lb-nginx:dev", "bgd/lb-haproxy:dev", "bgd/lb-builtin:dev", "bgd/client:dev"} {
		if exec.Command("docker", "image", "inspect", img).Run() != nil {
			return "image " + img + " is missing: run `make images` first"
		}
	}
	return ""
}

// need fails the test when the topology is not up: a loud skip on a
// machine without Docker, a failure in CI or when `up` failed.
func need(t *testing.T) {
	t.Helper()
	switch {
	case topo.unavailable != "" && testsupport.InCI():
		t.Fatalf("%s, and CI must not skip: install it (see .ci/run) and run make images", topo.unavailable)
	case topo.unavailable != "":
		t.Skipf("SKIP (loud): %s; the docker-compose tests did not run", topo.unavailable)
	case topo.upErr != nil:
		t.Fatalf("bringing the topology up failed: %v", topo.upErr)
	}
}

// composeCmd runs docker-compose on this run's project and returns its output.
func composeCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", topo.project, "-f", topo.file}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// up starts the topology from the images `make images` built (no --build:
// compose builds only an image that is missing) and waits until every load
// balancer answers the client.
func up() error {
	if out, err := composeCmd("up", "-d", "--no-build"); err != nil {
		return fmt.Errorf("docker-compose up: %v\n%s", err, out)
	}
	topo.ids = map[string]string{}
	for _, svc := range []string{"client", "lb-nginx", "lb-haproxy", "lb-builtin"} {
		out, err := composeCmd("ps", "-q", svc)
		id := strings.TrimSpace(out)
		if err != nil || id == "" {
			return fmt.Errorf("docker-compose ps -q %s: %v %s", svc, err, out)
		}
		topo.ids[svc] = id
	}
	for _, d := range drivers {
		if _, err := waitColour(d, "", time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// run is one command run in a container.
type run struct {
	stdout, stderr string
	code           int
}

// execIn runs argv in the service's container (docker exec, no shell of ours).
func execIn(service string, stdin string, argv ...string) (run, error) {
	return dockerExec(topo.ids[service], stdin, nil, argv...)
}

// dockerExec runs argv in a container (docker exec, no shell of ours) with
// stdin ("": none) and env (NAME=value) set, and returns what it printed and
// its exit code; the error is for a docker exec that could not run it.
func dockerExec(container, stdin string, env []string, argv ...string) (run, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"exec"}
	if stdin != "" {
		args = append(args, "-i")
	}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	cmd := exec.CommandContext(ctx, "docker", append(append(args, container), argv...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	r := run{stdout: out.String(), stderr: errb.String()}
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		r.code = xe.ExitCode()
		err = nil
	}
	return r, err
}

// background is a command running in a container (docker exec) while the
// test goes on; done is closed when it has exited, and out holds what it
// printed.
type background struct {
	cmd  *exec.Cmd
	out  *strings.Builder
	done chan struct{}
}

// startIn starts argv in container in the background; the test's end
// kills it if it still runs.
func startIn(t *testing.T, container string, argv ...string) *background {
	t.Helper()
	b := &background{cmd: exec.Command("docker", append([]string{"exec", container}, argv...)...),
		out: &strings.Builder{}, done: make(chan struct{})}
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() { b.cmd.Process.Kill(); <-b.done })
	return b
}

// endsKilled fails the test unless b ends within 10 s, killed by SIGKILL
// (exit 137, docker exec passing on the signalled process's status).
func (b *background) endsKilled(t *testing.T) {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("docker exec of the killed %q did not end", b.cmd.Args[3:])
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 137 {
		t.Fatalf("the killed %q exited %d, want 137 (SIGKILL): %s", b.cmd.Args[3:], code, b.out)
	}
}

// must runs argv in the service's container and fails the test unless it
// exits 0.
func must(t *testing.T, service string, argv ...string) string {
	t.Helper()
	r, err := execIn(service, "", argv...)
	if err != nil || r.code != 0 {
		t.Fatalf("%s: %q: exit %d, %v\n%s%s", service, argv, r.code, err, r.stdout, r.stderr)
	}
	return r.stdout
}

// bgdJSON runs `bgd --json ARGS` on the driver's host and decodes its
// answer; want is the exit code expected.
func bgdJSON(t *testing.T, d driver, want int, args ...string) map[string]any {
	t.Helper()
	r, err := execIn(d.service, "", append([]string{"bgd", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("%s: bgd %q: %v", d.service, args, err)
	}
	if r.code != want {
		t.Fatalf("%s: bgd %q exited %d, want %d\n%s%s", d.service, args, r.code, want, r.stdout, r.stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("%s: bgd %q: not one JSON object: %v\n%s", d.service, args, err, r.stdout)
	}
	return v
}

// status is the parts of `bgd status --json` the tests read.
type status struct {
	Active     string `json:"active_version"`
	LBActive   string `json:"lb_active"`
	Blue       slot   `json:"blue"`
	Green      slot   `json:"green"`
	InProgress *struct {
		Command string `json:"command"`
		PID     int    `json:"pid"`
	} `json:"in_progress"`
	Proxy *struct {
		PID     int  `json:"pid"`
		Running bool `json:"running"`
	} `json:"proxy"`
	History []struct {
		Action, Status, Reason string
	} `json:"deployment_history"`
}

type slot struct {
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
	Healthy bool   `json:"healthy"`
	Release string `json:"release"`
}

func (s status) slot(colour string) slot {
	if colour == "green" {
		return s.Green
	}
	return s.Blue
}

func other(colour string) string {
	if colour == "blue" {
		return "green"
	}
	return "blue"
}

// getStatus is `bgd status --json` on the driver's host.
func getStatus(t *testing.T, d driver) status {
	t.Helper()
	r, err := execIn(d.service, "", "bgd", "--json", "status")
	if err != nil || r.code != 0 {
		t.Fatalf("%s: bgd status: exit %d, %v\n%s%s", d.service, r.code, err, r.stdout, r.stderr)
	}
	var st status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("%s: bgd status --json: %v\n%s", d.service, err, r.stdout)
	}
	return st
}

// answerRE is the demo app's answer to /.
var answerRE = regexp.MustCompile(`^demo app: color=(blue|green) release=(\S+)\n$`)

// answer is one request from the client container through the driver's
// load balancer: the colour and release that answered.
func answer(d driver) (colour, release string, err error) {
	r, err := execIn("client", "", "curl", "-sS", "-m", "5", "-f", d.url)
	if err != nil {
		return "", "", err
	}
	if r.code != 0 {
		return "", "", fmt.Errorf("curl %s: exit %d: %s", d.url, r.code, strings.TrimSpace(r.stderr))
	}
	m := answerRE.FindStringSubmatch(r.stdout)
	if m == nil {
		return "", "", fmt.Errorf("curl %s: not the demo app's answer: %q", d.url, r.stdout)
	}
	return m[1], m[2], nil
}

// waitColour polls the client's view of the driver until the colour
// answers (any colour when ""), and returns the release that answered;
// an answer from the other colour is an error at once (the load balancer
// routes to the wrong slot), failed requests are retried.
func waitColour(d driver, colour string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		c, rel, err := answer(d)
		if err == nil && (colour == "" || c == colour) {
			return rel, nil
		}
		if err == nil {
			return "", fmt.Errorf("%s: %s answered through %s, want %s", d.name, c, d.url, colour)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s: %s did not answer as wanted within %s: %v", d.name, d.url, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// expectColour fails the test unless the next request through the driver's
// load balancer is answered by colour (and by release, unless "").
func expectColour(t *testing.T, d driver, colour, release, after string) {
	t.Helper()
	c, rel, err := answer(d)
	if err != nil {
		t.Fatalf("%s after %s: %v", d.name, after, err)
	}
	if c != colour || (release != "" && rel != release) {
		t.Fatalf("%s after %s: %s (release %s) answered, want %s (release %q)", d.name, after, c, rel, colour, release)
	}
}

// clientWrk is a wrk running in a client container, started from here.
type clientWrk struct {
	container string // the client container's id
	tag       string
	load      testsupport.WrkLoad
	cmd       *exec.Cmd
	out       bytes.Buffer
	errb      bytes.Buffer
	done      chan struct{}
	stopped   bool
}

var wrkSeq struct {
	sync.Mutex
	n int
}

// startWrk runs wrk in the client container against url with the load's
// script (testsupport.WrkScript: it prints the results as JSON); the test's
// cleanup stops it if the test did not.
func startWrk(t *testing.T, url string, l testsupport.WrkLoad) *clientWrk {
	t.Helper()
	return startWrkIn(t, topo.ids["client"], "wrk", url, l)
}

// startWrkIn is startWrk in the given client container, its files named
// after prefix.
func startWrkIn(t *testing.T, container, prefix, url string, l testsupport.WrkLoad) *clientWrk {
	t.Helper()
	wrkSeq.Lock()
	wrkSeq.n++
	w := &clientWrk{container: container, tag: fmt.Sprintf("%s-%d", prefix, wrkSeq.n), load: l, done: make(chan struct{})}
	wrkSeq.Unlock()
	script := "/tmp/" + w.tag + ".lua"
	if r, err := dockerExec(container, testsupport.WrkScript(l), nil, "sh", "-c", "cat > "+script); err != nil || r.code != 0 {
		t.Fatalf("writing %s in the client: exit %d, %v %s", script, r.code, err, r.stderr)
	}
	args := fmt.Sprintf("-t1 -c%d -d600s --timeout 5s -s %s", l.Conns, script)
	if l.NewConn {
		args += ` -H "Connection: close"`
	}
	// The shell records wrk's pid (exec keeps it) so that stop can send it
	// SIGINT: docker exec does not pass signals on.
	w.cmd = exec.Command("docker", "exec", container, "sh", "-c",
		fmt.Sprintf("echo $$ > /tmp/%s.pid; exec wrk %s %s", w.tag, args, url))
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.errb
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		if !w.stopped {
			w.stop()
		}
	})
	// Wait until wrk runs (its pid file is there).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, err := dockerExec(container, "", nil, "test", "-s", "/tmp/"+w.tag+".pid"); err == nil && r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wrk %s did not start in the client: %s", w.tag, w.errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return w
}

// stop interrupts wrk (it prints its results on SIGINT) and parses them.
func (w *clientWrk) stop() (testsupport.WrkResult, error) {
	w.stopped = true
	dockerExec(w.container, "", nil, "sh", "-c", fmt.Sprintf("kill -INT $(cat /tmp/%s.pid)", w.tag))
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.cmd.Process.Signal(syscall.SIGKILL)
		dockerExec(w.container, "", nil, "sh", "-c", fmt.Sprintf("kill -KILL $(cat /tmp/%s.pid)", w.tag))
		return testsupport.WrkResult{}, fmt.Errorf("wrk %s did not stop within 10 s of SIGINT", w.tag)
	}
	return testsupport.ParseWrk(w.out.String(), w.errb.String(), w.load.Delay > 0)
}

// result is one row of the results table.
type result struct {
	driver, client string
	flips          int
	wrk            testsupport.WrkResult
}

var results struct {
	sync.Mutex
	rows []result
}

func record(r result) {
	results.Lock()
	defer results.Unlock()
	results.rows = append(results.rows, r)
}

// printResults prints the table of the loaded flips (docs/BENCHMARKS.md
// quotes a run of it).
func printResults() {
	results.Lock()
	defer results.Unlock()
	if len(results.rows) == 0 {
		return
	}
	fmt.Println("compose results: flips under load from the client container (wrk -t1, 5 s timeout)")
	fmt.Printf("| %-8s | %-15s | %5s | %8s | %6s | %7s | %7s |\n", "driver", "client", "flips", "requests", "failed", "p99 ms", "max ms")
	fmt.Println("|----------|-----------------|-------|----------|--------|---------|---------|")
	for _, r := range results.rows {
		fmt.Printf("| %-8s | %-15s | %5d | %8d | %6d | %7.1f | %7.1f |\n", r.driver, r.client, r.flips, r.wrk.Requests, r.wrk.Failures, r.wrk.P99Ms, r.wrk.MaxMs)
	}
}
