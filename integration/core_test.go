package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// seedEnv gives a test its own ports for the seed's environment variables.
func seedEnv(t *testing.T) (env []string, proxyPort, bluePort, greenPort int) {
	proxyPort, bluePort, greenPort = freePort(t), freePort(t), freePort(t)
	env = []string{"NO_COLOR=1", "BG_PROXY_PORT=" + strconv.Itoa(proxyPort),
		"BLUE_PORT=" + strconv.Itoa(bluePort), "GREEN_PORT=" + strconv.Itoa(greenPort)}
	return env, proxyPort, bluePort, greenPort
}

// stateOf reads the state file of a work dir.
func stateOf(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("state %s does not parse: %v\n%s", path, err, data)
	}
	return st
}

// stopAll kills what a state file records (slots and their process
// groups, the builtin proxy) when the test ends.
func stopAll(t *testing.T, statePath string) {
	t.Cleanup(func() {
		data, err := os.ReadFile(statePath)
		if err != nil {
			return
		}
		var st struct {
			Blue  int `json:"blue_pid"`
			Green int `json:"green_pid"`
			Proxy int `json:"proxy_pid"`
		}
		json.Unmarshal(data, &st)
		for _, pid := range []int{st.Blue, st.Green, st.Proxy} {
			if pid > 0 {
				syscall.Kill(-pid, syscall.SIGKILL)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// getThrough GETs / through the proxy on a new connection.
func getThrough(t *testing.T, port int) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatalf("GET through proxy: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Acceptance 1: the README's run command (scripts/demo.sh, as `make demo`
// runs it) does start blue, deploy green, status, a request through the
// proxy answered by green, rollback, status, with no config file.
func TestDemoScript(t *testing.T) {
	dir := t.TempDir()
	env, _, bluePort, greenPort := seedEnv(t)
	stopAll(t, filepath.Join(dir, ".local_context", "bg_state.json"))
	cmd := exec.Command("bash", "../scripts/demo.sh")
	abs, _ := filepath.Abs("../scripts/demo.sh")
	cmd.Args = []string{"bash", abs}
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), env...), "BGD="+bgdBin)
	out, err := cmd.CombinedOutput()
	t.Logf("demo output:\n%s", out)
	if err != nil {
		t.Fatalf("demo failed: %v", err)
	}
	for _, want := range []string{
		"$ bgd start blue", "$ bgd deploy --release v2", "release v2 is live on green",
		"Active Version: GREEN", "demo app: color=green release=v2", "$ bgd rollback",
		"rolled back from green to blue", "Active Version: BLUE", "stopped blue, green and the builtin proxy",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// The clean-up stopped everything it started.
	for _, p := range []int{bluePort, greenPort} {
		waitFree(t, p)
	}
}

func waitFree(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dialPort(port)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("port %d still in use", port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Acceptance 2: the seed's "Manual Testing" sequence, verbatim, through
// ./bin/blue_green_deploy (a link to bgd, as `make build` makes it).
func TestRunbookManualTesting(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	if err := os.Symlink(bgdBin, filepath.Join(dir, "bin", "blue_green_deploy")); err != nil {
		t.Fatal(err)
	}
	env, proxyPort, _, _ := seedEnv(t)
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	stopAll(t, statePath)
	runbook := []struct {
		line   string
		active string
	}{
		{"./bin/blue_green_deploy start blue", "blue"},
		{"sleep 1", ""}, // the runbook sleeps 5; the wait proves nothing here
		{"./bin/blue_green_deploy status", "blue"},
		{"./bin/blue_green_deploy deploy", "green"},
		{"./bin/blue_green_deploy status", "green"},
		{"./bin/blue_green_deploy rollback", "blue"},
		{"./bin/blue_green_deploy status", "blue"},
	}
	for _, step := range runbook {
		argv := strings.Fields(step.line)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", step.line, err, out)
		}
		if step.active == "" {
			continue
		}
		if got := stateOf(t, statePath)["active_version"]; got != step.active {
			t.Fatalf("after %q active_version = %v, want %s", step.line, got, step.active)
		}
		if strings.HasSuffix(step.line, "status") && !strings.Contains(string(out), "Active Version: "+strings.ToUpper(step.active)) {
			t.Errorf("%s printed:\n%s", step.line, out)
		}
		if body := getThrough(t, proxyPort); !strings.Contains(body, "color="+step.active) {
			t.Errorf("after %q the proxy answered %q, want %s", step.line, body, step.active)
		}
	}
	st := stateOf(t, statePath)
	hist := st["deployment_history"].([]any)
	if len(hist) != 2 || hist[0].(map[string]any)["status"] != "success" || hist[1].(map[string]any)["status"] != "rolled_back" {
		t.Errorf("history = %v, want deploy success then rolled_back", hist)
	}
}

// Acceptance 3: 16 keep-alive clients whose requests are never silently
// retried (POST with a body: Go's transport replays only idempotent
// requests) send through the builtin proxy across 20 deploy/rollback flips:
// zero failures, and both colours answer.
func TestZeroDowntimeBuiltin(t *testing.T) {
	dir := t.TempDir()
	env, proxyPort, _, _ := seedEnv(t)
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	stopAll(t, statePath)
	mustBgd(t, dir, env, "start", "blue")

	const clients, flips = 16, 20
	var sent, failed atomic.Int64
	var seenMu sync.Mutex
	seen := map[string]int{}
	var firstErrs []string
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	url := fmt.Sprintf("http://127.0.0.1:%d/", proxyPort)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for ctx.Err() == nil {
				sent.Add(1)
				resp, err := client.Post(url, "text/plain", strings.NewReader("payload"))
				if err != nil {
					failed.Add(1)
					seenMu.Lock()
					firstErrs = append(firstErrs, err.Error())
					seenMu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					seenMu.Lock()
					firstErrs = append(firstErrs, fmt.Sprintf("status %d: %s", resp.StatusCode, body))
					seenMu.Unlock()
					continue
				}
				color := resp.Header.Get("X-Bgd-Slot")
				seenMu.Lock()
				seen[color]++
				seenMu.Unlock()
			}
		}()
	}
	start := time.Now()
	for i := 0; i < flips; i++ {
		if i%2 == 0 {
			mustBgd(t, dir, env, "deploy", "--release", fmt.Sprintf("r%d", i))
		} else {
			mustBgd(t, dir, env, "rollback")
		}
		// Let each new routing carry real traffic before the next flip.
		for target, deadline := sent.Load()+300, time.Now().Add(10*time.Second); sent.Load() < target && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	t.Logf("builtin proxy, %d keep-alive clients, %d flips in %s: %d requests sent, %d failed, seen %v",
		clients, flips, elapsed.Round(time.Millisecond), sent.Load(), failed.Load(), seen)
	if failed.Load() != 0 {
		if len(firstErrs) > 5 {
			firstErrs = firstErrs[:5]
		}
		t.Errorf("%d requests failed during flips; first errors: %v", failed.Load(), firstErrs)
		proxyLog, _ := os.ReadFile(filepath.Join(dir, ".local_context", "logs", "app-proxy.log"))
		t.Logf("proxy log:\n%s", proxyLog)
	}
	if seen["blue"] == 0 || seen["green"] == 0 {
		t.Errorf("both colours should have answered: %v", seen)
	}
	if sent.Load() < 300*flips {
		t.Errorf("only %d requests were sent: the load was too light to prove anything", sent.Load())
	}
}

func mustBgd(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := bgd(t, dir, env, args...)
	if code != 0 {
		t.Fatalf("bgd %v exited %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// writeConfig writes a bluegreen.yml for one service "app" whose slot is
// command (a YAML flow list), on the given ports.
func writeConfig(t *testing.T, dir, name, command string, proxyPort, bluePort, greenPort int, extra string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	cfg := fmt.Sprintf(`state_dir: .local_context
services:
  app:
    command: %s
    blue: {port: %d}
    green: {port: %d}
    health: {timeout: 10s}
    stop_grace: 2s
    lb:
      driver: builtin
      builtin: {listen: "127.0.0.1:%d"}
%s`, command, bluePort, greenPort, proxyPort, extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Acceptance 4: a slot whose process exits at start fails start and deploy
// in under a second, quoting its log; traffic and active_version stay;
// history records failed.
func TestCrashAtStart(t *testing.T) {
	dir := t.TempDir()
	proxyPort, bluePort, greenPort := freePort(t), freePort(t), freePort(t)
	good := writeConfig(t, dir, "good.yml",
		fmt.Sprintf(`[%q, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"]`, bgdBin),
		proxyPort, bluePort, greenPort, "")
	crash := writeConfig(t, dir, "crash.yml",
		`["/bin/sh", "-c", "echo 'fatal: DATABASE_URL is not set' >&2; exit 3"]`, proxyPort, bluePort, greenPort, "")
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	stopAll(t, statePath)

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"start", []string{"--config", crash, "start", "green"}},
		{"deploy", []string{"--config", crash, "deploy", "--release", "broken"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustBgd(t, dir, nil, "--config", good, "start", "blue")
			// The claim is that the slot's exit ends the wait (health.timeout
			// is 10s here). On a shared 2-core host a whole run can stall
			// for a second (seen once in a stress run: 1.09s, where calm runs
			// take 12-42 ms), so the fastest of up to 3 tries must be under 1s.
			var errOut string
			var tries []time.Duration
			for len(tries) < 3 {
				begin := time.Now()
				var code int
				_, errOut, code = bgd(t, dir, nil, tc.args...)
				tries = append(tries, time.Since(begin).Round(time.Millisecond))
				if code != 1 {
					t.Fatalf("exit %d, want 1; stderr: %s", code, errOut)
				}
				if tries[len(tries)-1] < time.Second {
					break
				}
			}
			t.Logf("%s of a crashing slot failed in %v", tc.name, tries)
			if slices.Min(tries) >= time.Second {
				t.Errorf("took %v, want under 1s (the process exit must end the wait)", tries)
			}
			for _, want := range []string{"green", "process exited at start", "fatal: DATABASE_URL is not set"} {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
			st := stateOf(t, statePath)
			if st["active_version"] != "blue" || st["green_pid"].(float64) != 0 {
				t.Errorf("state changed: active_version=%v green_pid=%v", st["active_version"], st["green_pid"])
			}
			hist := st["deployment_history"].([]any)
			last := hist[len(hist)-1].(map[string]any)
			if last["status"] != "failed" || last["to"] != "green" {
				t.Errorf("last history entry = %v, want failed to green", last)
			}
			if body := getThrough(t, proxyPort); !strings.Contains(body, "color=blue") {
				t.Errorf("traffic moved: %q", body)
			}
		})
	}
}

// Acceptance 5: switch to a stopped or unhealthy slot exits 1 with "Cannot
// switch to green: not healthy"; --force overrides.
func TestSwitchRefusesUnhealthy(t *testing.T) {
	dir := t.TempDir()
	proxyPort, bluePort, greenPort := freePort(t), freePort(t), freePort(t)
	// green's health fails 300ms after it starts; blue stays healthy.
	cfg := writeConfig(t, dir, "bluegreen.yml",
		fmt.Sprintf(`[%q, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}", "--fail-after", "{{if eq .Color \"green\"}}300ms{{else}}0s{{end}}"]`, bgdBin),
		proxyPort, bluePort, greenPort, "")
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	stopAll(t, statePath)
	mustBgd(t, dir, nil, "--config", cfg, "start", "blue")

	_, errOut, code := bgd(t, dir, nil, "--config", cfg, "switch", "green")
	if code != 1 || !strings.Contains(errOut, "Cannot switch to green: not healthy") {
		t.Fatalf("stopped green: exit %d, stderr %q", code, errOut)
	}
	mustBgd(t, dir, nil, "--config", cfg, "start", "green")
	time.Sleep(400 * time.Millisecond) // let green's --fail-after pass
	_, errOut, code = bgd(t, dir, nil, "--config", cfg, "switch", "green")
	if code != 1 || !strings.Contains(errOut, "Cannot switch to green: not healthy") {
		t.Fatalf("unhealthy green: exit %d, stderr %q", code, errOut)
	}
	if st := stateOf(t, statePath); st["active_version"] != "blue" {
		t.Fatalf("refused switch changed active_version to %v", st["active_version"])
	}
	mustBgd(t, dir, nil, "--config", cfg, "switch", "--force", "green")
	if st := stateOf(t, statePath); st["active_version"] != "green" {
		t.Fatalf("--force did not switch: %v", st["active_version"])
	}
	if body := getThrough(t, proxyPort); !strings.Contains(body, "color=green") {
		t.Errorf("after --force the proxy answered %q", body)
	}
}
