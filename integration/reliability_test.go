package integration

// The reliability suite (issue 6): bad input, corrupt state, crashes at
// every step of a deploy, two operators at once, faults of slots, of the
// load balancer and of the disk, fuzzing (in config/ and state/) and the
// security promises. Everything runs against the real bgd binary and real
// processes.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
	"github.com/fsnotify/fsnotify"
)

// validState is a state file the bad-input cases must leave untouched.
const validState = `{
  "active_version": "green",
  "blue_port": 7101,
  "green_port": 7102,
  "blue_pid": 0,
  "green_pid": 0,
  "blue_healthy": false,
  "green_healthy": false,
  "last_switch": null,
  "last_check": null,
  "deployment_history": [],
  "generation": 3
}
`

// TestReliabilityBadInput: every bad input exits 2 with a message naming
// the culprit, and no file in the working directory changes (the state
// file is compared byte for byte, and no lock or log file appears).
func TestReliabilityBadInput(t *testing.T) {
	svc := func(body string) string { return "services:\n  app:\n" + body }
	ok := "    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n"
	cases := []struct {
		name   string
		config string // bluegreen.yml in the directory; "" for none (embedded default)
		env    []string
		args   []string
		want   []string
	}{
		{"unknown key", svc(ok + "    colour: blue\n"), nil, []string{"status"}, []string{`unknown key "colour"`, "line 6", "bluegreen.yml"}},
		{"unknown nested key", svc(ok + "    lb:\n      drivr: nginx\n"), nil, []string{"deploy"}, []string{`unknown key "drivr"`, "line 7"}},
		{"wrong type port", svc("    command: [x]\n    blue: {port: five}\n    green: {port: 7102}\n"), nil, []string{"status"}, []string{"line 4", "five"}},
		{"wrong type command", svc("    command: {a: b}\n    blue: {port: 7101}\n    green: {port: 7102}\n"), nil, []string{"start", "blue"}, []string{"line 3"}},
		{"invalid duration", svc(ok + "    stop_grace: 10 seconds\n"), nil, []string{"stop", "blue"}, []string{"line 6", `invalid duration "10 seconds"`}},
		{"negative duration", svc(ok + "    health: {timeout: -5s}\n"), nil, []string{"deploy"}, []string{"line 6", `"-5s"`}},
		{"port out of range", svc("    command: [x]\n    blue: {port: 65536}\n    green: {port: 7102}\n"), nil, []string{"status"}, []string{"blue port 65536 is out of range"}},
		{"port zero", svc("    command: [x]\n    blue: {port: 7101}\n    green: {port: 0}\n"), nil, []string{"status"}, []string{"green port 0 is out of range"}},
		{"blue port equals green", svc("    command: [x]\n    blue: {port: 7101}\n    green: {port: 7101}\n"), nil, []string{"deploy"}, []string{"green port 7101 is already used by service \"app\" blue"}},
		{"ports collide across services", svc(ok) + "  web:\n    command: [x]\n    blue: {port: 7102}\n    green: {port: 7103}\n", nil, []string{"-s", "web", "status"}, []string{`service "web": blue port 7102 is already used by service "app" green`}},
		{"proxy on a slot port", svc(ok + "    lb: {builtin: {listen: \"127.0.0.1:7102\"}}\n"), nil, []string{"status"}, []string{"lb.builtin.listen port 7102"}},
		{"service name injects", "services:\n  \"app;}\":\n" + ok, nil, []string{"status"}, []string{`service name "app;}"`}},
		{"service name with space", "services:\n  \"my app\":\n" + ok, nil, []string{"status"}, []string{`service name "my app"`}},
		{"backend name injects", svc(ok + "    lb: {driver: haproxy, haproxy: {backends: {blue: \"b1 if TRUE\", green: g1}}}\n"), nil, []string{"status"}, []string{`lb.haproxy.backends.blue "b1 if TRUE"`}},
		{"backend name with newline", svc(ok + "    lb: {driver: haproxy, haproxy: {backends: {green: \"g\\nuse_backend x\"}}}\n"), nil, []string{"status"}, []string{`lb.haproxy.backends.green`}},
		{"empty command", svc("    command: []\n    blue: {port: 7101}\n    green: {port: 7102}\n"), nil, []string{"deploy"}, []string{`service "app": command is empty`}},
		{"unknown driver", svc(ok + "    lb: {driver: envoy}\n"), nil, []string{"status"}, []string{`lb.driver "envoy"`}},
		{"empty config file", " \n", nil, []string{"status"}, []string{"empty"}},
		{"missing --config", "", nil, []string{"--config", "nope.yml", "status"}, []string{"nope.yml"}},
		{"missing BG_CONFIG", "", []string{"BG_CONFIG=gone.yml"}, []string{"status"}, []string{"gone.yml"}},
		{"unknown colour start", svc(ok), nil, []string{"start", "purple"}, []string{`"purple"`}},
		{"unknown colour switch", svc(ok), nil, []string{"switch", "red"}, []string{`"red"`}},
		{"unknown colour stop", svc(ok), nil, []string{"stop", "Blue"}, []string{`"Blue"`}},
		{"unknown colour logs", svc(ok), nil, []string{"logs", "yellow"}, []string{`"yellow"`}},
		{"missing colour", svc(ok), nil, []string{"switch"}, []string{"blue or green"}},
		{"unknown command", svc(ok), nil, []string{"frobnicate"}, []string{`"frobnicate"`}},
		{"unknown flag", svc(ok), nil, []string{"deploy", "--relaese", "r1"}, []string{"relaese"}},
		{"bad --lock-timeout", svc(ok), nil, []string{"--lock-timeout", "soon", "deploy"}, []string{"soon"}},
		{"unknown service", svc(ok), nil, []string{"-s", "db", "status"}, []string{`unknown service "db"`}},
		{"BLUE_PORT=abc", "", []string{"BLUE_PORT=abc"}, []string{"status"}, []string{`BLUE_PORT="abc"`}},
		{"GREEN_PORT out of range", "", []string{"GREEN_PORT=99999"}, []string{"deploy"}, []string{"green port 99999 is out of range"}},
		{"BLUE_PORT equals GREEN_PORT", "", []string{"BLUE_PORT=7301", "GREEN_PORT=7301"}, []string{"start", "blue"}, []string{"green port 7301 is already used"}},
		{"BG_PROXY_PORT=x", "", []string{"BG_PROXY_PORT=x"}, []string{"deploy"}, []string{`BG_PROXY_PORT="x"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, ".local_context"), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, ".local_context", "bg_state.json"), []byte(validState), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "bluegreen.yml"), []byte(tc.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, dir)
			stdout, stderr, code := bgd(t, dir, tc.env, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not name %q:\n%s", w, stderr)
				}
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("the directory changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			// --json: the same refusal, machine-readable.
			stdout, _, code = bgd(t, dir, tc.env, append([]string{"--json"}, tc.args...)...)
			var res struct {
				OK       bool   `json:"ok"`
				Error    string `json:"error"`
				ExitCode int    `json:"exit_code"`
			}
			if code != 2 {
				t.Errorf("--json: exit %d, want 2", code)
			}
			if strings.Contains(tc.name, "unknown command") || strings.Contains(tc.name, "unknown flag") || strings.Contains(tc.name, "lock-timeout") {
				return // urfave/cli refuses these before bgd's own error handling
			}
			if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.OK || res.ExitCode != 2 || !strings.Contains(res.Error, tc.want[0]) {
				t.Errorf("--json output %q, want {ok: false, exit_code: 2, error naming %q}", stdout, tc.want[0])
			}
		})
	}
}

// corruptions are the ways a state file can be broken on disk.
var corruptions = []struct {
	name string
	data func(valid []byte) []byte
}{
	{"torn", func(v []byte) []byte { return v[:len(v)/2] }},
	{"empty", func([]byte) []byte { return nil }},
	{"non-JSON", func([]byte) []byte { return []byte("\x00\x01garbage\xff\n") }},
	{"wrong schema", func([]byte) []byte { return []byte(`{"active_version": "purple", "blue_port": "5005"}` + "\n") }},
}

// TestReliabilityCorruptState: with a live deployment (green active) whose
// state file is then broken, every command refuses (exit 1, naming the file
// and `bgd reconcile`) and leaves the file byte for byte as it was; `bgd
// reconcile` moves it aside and rebuilds the state from the running slots
// and the proxy, reporting each fix; afterwards state and proxy agree and
// the next deploy works.
func TestReliabilityCorruptState(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.must("start", "blue")
	r.must("deploy", "--release", "r1")
	good := r.state()
	valid, err := os.ReadFile(r.statePath)
	if err != nil {
		t.Fatal(err)
	}
	commands := [][]string{
		{"status"}, {"history"}, {"render"}, {"health-check"},
		{"start", "blue"}, {"start", "green"}, {"stop", "blue"}, {"stop", "green", "--force"},
		{"deploy"}, {"deploy", "--no-switch"}, {"switch", "blue"}, {"switch", "green"}, {"rollback"},
	}
	statePathRel := filepath.Join(".local_context", "bg_state.json") // as configured
	refusals := 0
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			bad := c.data(valid)
			if err := os.WriteFile(r.statePath, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range commands {
				_, stderr, code := r.run(args...)
				if code != 1 {
					t.Errorf("%s: exit %d, want 1\n%s", args, code, stderr)
				}
				if !strings.Contains(stderr, statePathRel) || !strings.Contains(stderr, "bgd reconcile") {
					t.Errorf("%s: error does not name %s and `bgd reconcile`:\n%s", args, statePathRel, stderr)
				}
				if now, _ := os.ReadFile(r.statePath); string(now) != string(bad) {
					t.Fatalf("%s changed the corrupt file to %q", args, now)
				}
				refusals++
			}
			// The proxy keeps routing to green meanwhile.
			if got := r.servedBy(); got != "green" {
				t.Errorf("with a corrupt state the proxy serves %q, want green", got)
			}

			out := r.must("--json", "reconcile")
			var rec struct {
				Active      string   `json:"active_version"`
				Fixes       []string `json:"fixes"`
				KeptCorrupt string   `json:"kept_corrupt"`
			}
			if err := json.Unmarshal([]byte(out), &rec); err != nil {
				t.Fatalf("reconcile --json: %v\n%s", err, out)
			}
			report := strings.Join(rec.Fixes, "\n")
			for _, w := range []string{
				"state file was corrupt: moved to " + rec.KeptCorrupt,
				fmt.Sprintf("blue: port %d is served by pid %d", r.blue, good.BluePID),
				fmt.Sprintf("green: port %d is served by pid %d", r.green, good.GreenPID),
				"blue: healthy is true", "green: healthy is true",
				"the load balancer routes to green, the state said blue",
			} {
				if !strings.Contains(report, w) {
					t.Errorf("reconcile report lacks %q:\n%s", w, report)
				}
			}
			if kept, err := os.ReadFile(filepath.Join(r.dir, rec.KeptCorrupt)); err != nil || string(kept) != string(bad) {
				t.Errorf("the corrupt file was not kept as it was at %s: %v", rec.KeptCorrupt, err)
			}
			st := r.state()
			if st.ActiveVersion != "green" || st.BluePID != good.BluePID || st.GreenPID != good.GreenPID || !st.BlueHealthy || !st.GreenHealthy {
				t.Errorf("rebuilt state %+v, want green active, pids %d/%d, both healthy", st, good.BluePID, good.GreenPID)
			}
			s := r.status()
			if s.ActiveVersion != s.LBActive || s.LBActive != "green" {
				t.Errorf("after reconcile the state says %s and the proxy %s, want both green", s.ActiveVersion, s.LBActive)
			}
			// Reconcile again: nothing left to fix but the health record.
			out = r.must("reconcile")
			if strings.Contains(out, "corrupt") || strings.Contains(out, "adopted") || strings.Contains(out, "routes to") {
				t.Errorf("a second reconcile still fixes things:\n%s", out)
			}
		})
	}
	t.Logf("%d commands refused on %d kinds of corrupt state file", refusals, len(corruptions))
	r.must("deploy", "--release", "r2")
	r.waitServedBy("blue")
	if st := r.state(); st.ActiveVersion != "blue" || st.BlueRelease != "r2" {
		t.Errorf("deploy after reconcile: active %s release %s, want blue r2", st.ActiveVersion, st.BlueRelease)
	}
}

// killPoint says when to SIGKILL a running `bgd deploy`.
type killPoint struct {
	name string
	// log: kill when a stderr (-v) line contains this.
	log string
	// tmpWrite: kill when the n-th state write has created its temp file
	// (the write is under way); written: when the n-th write has been
	// renamed into place.
	tmpWrite, written int
	// idleHealthy: kill as soon as the new slot answers its health check,
	// before bgd's own next probe sees it (right before the flip).
	idleHealthy bool
	// inProgress: the state file must show the interrupted deploy.
	inProgress bool
	// next is what runs after the kill: "reconcile" then deploy, or
	// "deploy" straight away (which must record the interruption itself).
	next string
	// mayFinish: the point is in or after bgd's last write, so on a busy
	// host the deploy may finish and exit 0 before the SIGKILL lands; the
	// test then checks the finished deploy instead (inProgress is moot).
	mayFinish bool
}

// TestReliabilityCrashSafety SIGKILLs `bgd deploy` at each step. A deploy
// writes the state four times: 1 marks it in progress, 2 records the new
// slot's pid, 3 flips active_version (the builtin proxy follows the file),
// 4 records success and clears the mark. After every kill the state file
// parses, `bgd status` shows the interrupted deploy, the next mutating
// command records it as failed ("interrupted"), state and proxy agree after
// `bgd reconcile`, and the next deploy works.
func TestReliabilityCrashSafety(t *testing.T) {
	points := []killPoint{
		{name: "while marking the deploy in progress", tmpWrite: 1, next: "reconcile"},
		{name: "after marking, before starting the slot", written: 1, inProgress: true, next: "deploy"},
		{name: "slot started, pid not yet recorded", log: "slot started", inProgress: true, next: "reconcile"},
		{name: "while recording the slot's pid", tmpWrite: 2, inProgress: true, next: "reconcile"},
		{name: "while waiting for health", log: "waiting for health", inProgress: true, next: "deploy"},
		{name: "right before the flip", idleHealthy: true, inProgress: true, next: "reconcile"},
		{name: "while writing the flip", tmpWrite: 3, inProgress: true, next: "reconcile"},
		{name: "right after the flip", written: 3, inProgress: true, next: "reconcile"},
		{name: "while writing the success", tmpWrite: 4, inProgress: true, next: "reconcile", mayFinish: true},
		{name: "after writing the success", written: 4, next: "deploy", mayFinish: true},
	}
	r := newRig(t, rigOptions{slotArgs: []string{"--ready-after", "400ms"}})
	r.must("start", "blue")
	stateDir := filepath.Dir(r.statePath)
	tmpPrefix := "." + filepath.Base(r.statePath) + ".tmp-"
	midWrite := 0
	for i, kp := range points {
		ok := t.Run(kp.name, func(t *testing.T) {
			before := r.state()
			idle := "green"
			if before.ActiveVersion == "green" {
				idle = "blue"
			}
			idlePort := r.blue
			if idle == "green" {
				idlePort = r.green
			}
			w, err := fsnotify.NewWatcher()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if err := w.Add(stateDir); err != nil {
				t.Fatal(err)
			}
			release := fmt.Sprintf("k%d", i)
			cmd, lines := r.start("deploy", "--release", release)
			tmps, writes := 0, 0
			var probeTick <-chan time.Time
			if kp.idleHealthy {
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				probeTick = tick.C
			}
			timeout := time.After(20 * time.Second)
			var stderr []string
		wait:
			for {
				select {
				case ev := <-w.Events:
					base := filepath.Base(ev.Name)
					switch {
					case ev.Op&fsnotify.Create != 0 && strings.HasPrefix(base, tmpPrefix):
						tmps++
						if tmps == kp.tmpWrite {
							break wait
						}
					case ev.Op&fsnotify.Create != 0 && ev.Name == r.statePath:
						writes++
						if writes == kp.written {
							break wait
						}
					}
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("deploy ended before the kill point (%d state writes seen):\n%s", writes, strings.Join(stderr, "\n"))
					}
					stderr = append(stderr, l)
					if kp.log != "" && strings.Contains(l, kp.log) {
						break wait
					}
				case <-probeTick:
					// The old release may still answer on the idle port until
					// the deploy stops it: wait for the new one.
					if releaseHealthy(idlePort) == release {
						break wait
					}
				case <-timeout:
					t.Fatal("the kill point never came")
				}
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			ps := cmd.ProcessState
			switch {
			case ps != nil && ps.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
			case ps != nil && ps.Success() && kp.mayFinish:
				t.Logf("the deploy finished by itself before the SIGKILL landed: this point was missed")
				kp.inProgress = false
			default:
				t.Fatalf("deploy was not killed: it ended by itself (%v) before the kill point", ps)
			}
			if left, _ := filepath.Glob(filepath.Join(stateDir, tmpPrefix+"*")); len(left) > 0 {
				midWrite++
				t.Logf("killed mid-write: %d temp file(s) left behind", len(left))
			}

			// The state file parses, and shows the deploy if it got that far.
			st := r.state()
			if kp.inProgress && st.InProgress == nil {
				t.Errorf("the state does not show the interrupted deploy")
			}
			s := r.status()
			if (st.InProgress != nil) != (s.InProgress != nil) {
				t.Errorf("status in_progress %+v, state file %+v", s.InProgress, st.InProgress)
			}
			if s.InProgress != nil {
				if !strings.HasPrefix(s.InProgress.Command, "deploy") || s.InProgress.PID != cmd.Process.Pid {
					t.Errorf("status shows %+v, want the killed deploy (pid %d)", s.InProgress, cmd.Process.Pid)
				}
				// The killed deploy is gone, so status calls it interrupted.
				if text := r.must("status"); !strings.Contains(text, fmt.Sprintf("Interrupted: deploy (pid %d, no longer running)", cmd.Process.Pid)) {
					t.Errorf("text status does not show the interrupted deploy:\n%s", text)
				}
			}

			if kp.next == "reconcile" {
				out := r.must("reconcile")
				if st.InProgress != nil && !strings.Contains(out, "was interrupted: recorded as failed") {
					t.Errorf("reconcile does not report the interrupted deploy:\n%s", out)
				}
				s = r.status()
				if s.ActiveVersion != s.LBActive {
					t.Fatalf("after reconcile the state says %s, the proxy %s", s.ActiveVersion, s.LBActive)
				}
				r.waitServedBy(s.ActiveVersion)
				if left, _ := filepath.Glob(filepath.Join(stateDir, tmpPrefix+"*")); len(left) > 0 {
					t.Errorf("temp files of the killed write survive reconcile: %v", left)
				}
			}
			out, stderrNext, code := r.run("deploy", "--release", release+"-next")
			if code != 0 {
				t.Fatalf("the next deploy failed (exit %d):\n%s%s", code, out, stderrNext)
			}
			after := r.state()
			r.waitServedBy(after.ActiveVersion)
			if after.InProgress != nil {
				t.Errorf("in_progress left after a successful deploy: %+v", after.InProgress)
			}
			if st.InProgress != nil {
				found := false
				for _, e := range after.History {
					if e.Status == state.StatusFailed && strings.HasPrefix(e.Action, "deploy") &&
						strings.Contains(e.Reason, fmt.Sprintf("interrupted: deploy (pid %d)", cmd.Process.Pid)) {
						found = true
					}
				}
				if !found {
					t.Errorf("history does not record the interrupted deploy as failed:\n%+v", after.History)
				}
			}
			if last := after.History[len(after.History)-1]; last.Status != state.StatusSuccess || last.Release != release+"-next" {
				t.Errorf("last history entry %+v, want the next deploy's success", last)
			}
		})
		if !ok {
			break // the rig is in an unknown state
		}
	}
	t.Logf("%d kill points tried; %d kills landed while a state write was under way", len(points), midWrite)
}

var quickClient = &http.Client{Timeout: 100 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}

// releaseHealthy returns the release the demo app on port reports as
// healthy ("" when it is not).
func releaseHealthy(port int) string {
	resp, err := quickClient.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var h struct {
		OK      bool   `json:"ok"`
		Release string `json:"release"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&h) != nil || !h.OK {
		return ""
	}
	return h.Release
}

// waitLockedBy polls the lock file until it names command.
func (r *rig) waitLockedBy(command string) int {
	r.t.Helper()
	var pid int
	waitFor(r.t, 10*time.Second, "the lock to be held by "+command, func() bool {
		data, _ := os.ReadFile(r.statePath + ".lock")
		p, cmd, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
		pid, _ = strconv.Atoi(p)
		return pid > 0 && cmd == command
	})
	return pid
}

// TestReliabilityLockContention: while a deploy holds the lock, a second
// mutating command exits 3 at once naming the deploy's pid and command;
// with --lock-timeout it waits for the deploy and then succeeds; reads
// (status) are never blocked.
func TestReliabilityLockContention(t *testing.T) {
	r := newRig(t, rigOptions{slotArgs: []string{"--ready-after", "1500ms"}})
	r.must("start", "blue")
	deploy, _ := r.start("deploy", "--release", "slow")
	holder := r.waitLockedBy("deploy")
	if holder != deploy.Process.Pid {
		t.Fatalf("lock held by pid %d, want the deploy's %d", holder, deploy.Process.Pid)
	}

	cases := []struct {
		name string
		args []string
	}{
		{"switch", []string{"switch", "blue"}},
		{"rollback", []string{"rollback"}},
		{"stop", []string{"stop", "green"}},
		{"deploy", []string{"deploy"}},
		{"reconcile", []string{"reconcile"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, stderr, code := r.run(tc.args...)
			if code != 3 {
				t.Errorf("exit %d, want 3:\n%s", code, stderr)
			}
			for _, w := range []string{fmt.Sprintf("pid %d", deploy.Process.Pid), "(deploy)", "--lock-timeout"} {
				if !strings.Contains(stderr, w) {
					t.Errorf("message does not name %q:\n%s", w, stderr)
				}
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("refused after %s, want at once (default --lock-timeout 0)", d)
			}
		})
	}
	if _, stderr, code := r.run("status"); code != 0 {
		t.Errorf("status during a deploy: exit %d\n%s", code, stderr)
	}

	// With a timeout the switch waits for the deploy and then runs.
	_, stderr, code := r.run("--lock-timeout", "10s", "switch", "blue")
	if code != 0 {
		t.Fatalf("switch --lock-timeout 10s: exit %d\n%s", code, stderr)
	}
	if err := deploy.Wait(); err != nil {
		t.Fatalf("the deploy failed: %v", err)
	}
	h := r.state().History
	if n := len(h); n < 2 || h[n-2].Action != "deploy" || h[n-2].Status != state.StatusSuccess || h[n-1].Action != "switch" || h[n-1].To != "blue" {
		t.Errorf("history %+v, want the deploy's success, then the waiting switch's", h)
	}
	r.waitServedBy("blue")
}

// TestReliabilityRace: two processes doing 50 rollbacks each (every one a
// flip), with a third sweeping health all the while: no operation fails,
// and none is lost: 100 flips counted, the history chain is unbroken, and
// the proxy serves what the state says.
func TestReliabilityRace(t *testing.T) {
	const perProcess = 50
	r := newRig(t, rigOptions{})
	r.must("start", "blue")
	r.must("deploy", "--release", "r1")
	before := r.state()

	var wg sync.WaitGroup
	errs := make(chan string, 2*perProcess)
	for p := range 2 {
		wg.Go(func() {
			for i := range perProcess {
				_, stderr, code := r.run("--lock-timeout", "60s", "rollback")
				if code != 0 {
					errs <- fmt.Sprintf("process %d, rollback %d: exit %d: %s", p, i, code, stderr)
				}
			}
		})
	}
	stop := make(chan struct{})
	sweeps, recorded := 0, 0
	var sweepWG sync.WaitGroup
	sweepWG.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, _, code := r.run("--json", "health-check")
			sweeps++
			var sw struct {
				Services []struct {
					Recorded bool `json:"recorded"`
				} `json:"services"`
			}
			if json.Unmarshal([]byte(out), &sw) == nil && len(sw.Services) == 1 && sw.Services[0].Recorded {
				recorded++
			}
			if code != 0 && code != 1 {
				errs <- fmt.Sprintf("health-check: exit %d", code)
			}
		}
	})
	wg.Wait()
	close(stop)
	sweepWG.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	after := r.state()
	if flips := after.Generation - before.Generation; flips != 2*perProcess {
		t.Errorf("%d flips recorded, want %d: updates were lost", flips, 2*perProcess)
	}
	if after.ActiveVersion != before.ActiveVersion {
		t.Errorf("after an even number of flips %s is active, want %s", after.ActiveVersion, before.ActiveVersion)
	}
	h := after.History
	if len(h) != state.MaxHistory {
		t.Fatalf("history holds %d entries, want %d", len(h), state.MaxHistory)
	}
	for i, e := range h {
		if e.Action != "rollback" || e.Status != state.StatusRolledBack {
			t.Errorf("history[%d] = %+v, want a rollback", i, e)
		}
		if i > 0 && e.From != h[i-1].To {
			t.Errorf("history[%d] goes %s->%s after %s->%s: an entry was lost", i, e.From, e.To, h[i-1].From, h[i-1].To)
		}
	}
	if h[len(h)-1].To != after.ActiveVersion {
		t.Errorf("newest entry goes to %s, state says %s", h[len(h)-1].To, after.ActiveVersion)
	}
	s := r.status()
	if s.LBActive != after.ActiveVersion {
		t.Errorf("proxy routes to %s, state says %s", s.LBActive, after.ActiveVersion)
	}
	r.waitServedBy(after.ActiveVersion)
	t.Logf("%d rollbacks raced by 2 processes, %d health sweeps beside them (%d recorded); none lost", 2*perProcess, sweeps, recorded)
}

// TestReliabilitySweepDuringDeploy: health sweeps run back to back while a
// deploy waits for its slot. None blocks for long, none fails (the active
// slot is healthy), and none records its stale view (the new slot starting
// and unhealthy) over the deploy's result.
func TestReliabilitySweepDuringDeploy(t *testing.T) {
	r := newRig(t, rigOptions{slotArgs: []string{"--ready-after", "1s"}})
	r.must("start", "blue")
	for round := range 2 {
		deploy, _ := r.start("deploy", "--release", fmt.Sprintf("d%d", round))
		done := make(chan error, 1)
		go func() { done <- deploy.Wait() }()
		r.waitLockedBy("deploy")
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		sweeps := 0
		stop := make(chan struct{})
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					_, stderr, code := r.run("health-check")
					d := time.Since(start)
					mu.Lock()
					sweeps++
					slowest = max(slowest, d)
					mu.Unlock()
					if code != 0 {
						t.Errorf("health-check during the deploy: exit %d\n%s", code, stderr)
					}
				}
			})
		}
		err := <-done
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
		st := r.state()
		if !st.BlueHealthy || !st.GreenHealthy {
			t.Errorf("round %d: after the deploy and the sweeps blue_healthy=%v green_healthy=%v, want both true (a sweep recorded a stale result)",
				round, st.BlueHealthy, st.GreenHealthy)
		}
		if slowest > 1500*time.Millisecond {
			t.Errorf("round %d: a sweep took %s during the deploy, want well under the deploy's lock time", round, slowest)
		}
		t.Logf("round %d: %d sweeps during the deploy, slowest %s", round, sweeps, slowest)
	}
}

// deployed is a rig with blue started and release r1 deployed to green.
func deployed(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := newRig(t, o)
	r.must("start", "blue")
	r.must("deploy", "--release", "r1")
	r.waitServedBy("green")
	return r
}

// TestReliabilityActiveSlotDies: the active slot is killed after the flip.
// With health.max_restarts 0 the next health-check exits 1 naming it; by
// default the sweep restarts it on its release and exits 0; with failover
// the healthy standby takes over at once, the history says why, and the
// slot that died is restarted as the standby.
func TestReliabilityActiveSlotDies(t *testing.T) {
	for _, c := range []struct {
		name               string
		failover, restarts bool
	}{{"no restarts", false, false}, {"restart", false, true}, {"failover", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			r := deployed(t, rigOptions{failover: c.failover, noRestarts: !c.restarts})
			killGroup(r.state().GreenPID)
			waitFor(t, 5*time.Second, "green to stop answering", func() bool { return releaseHealthy(r.green) == "" })
			out, stderr, code := r.run("health-check")
			st := r.state()
			switch c.name {
			case "no restarts":
				if code != 1 || !strings.Contains(stderr, "active slot green") || !strings.Contains(stderr, strconv.Itoa(r.green)) {
					t.Fatalf("health-check: exit %d, want 1 naming green and its port:\n%s%s", code, out, stderr)
				}
				if st.ActiveVersion != "green" || st.GreenHealthy {
					t.Errorf("state: active %s green_healthy %v, want green recorded unhealthy", st.ActiveVersion, st.GreenHealthy)
				}
				return
			case "restart":
				if code != 0 || !strings.Contains(out, "restarted active slot green (release r1") {
					t.Fatalf("health-check: exit %d, want 0 and green restarted:\n%s%s", code, out, stderr)
				}
				if st.ActiveVersion != "green" || !st.GreenHealthy || releaseHealthy(r.green) != "r1" {
					t.Errorf("state: active %s green_healthy %v, green answers %q", st.ActiveVersion, st.GreenHealthy, releaseHealthy(r.green))
				}
				r.waitServedBy("green")
				return
			}
			if code != 0 || !strings.Contains(out, "failed over to blue") || !strings.Contains(out, "restarted standby slot green (release r1") {
				t.Fatalf("health-check with failover: exit %d, want 0, a failover and green restarted:\n%s%s", code, out, stderr)
			}
			var fo state.Event
			for _, e := range st.History {
				if e.Action == "failover" {
					fo = e
				}
			}
			if st.ActiveVersion != "blue" || fo.Status != state.StatusSuccess ||
				fo.From != "green" || fo.To != "blue" || !strings.Contains(fo.Reason, "active slot green unhealthy") {
				t.Errorf("after failover: active %s, failover %+v; want blue, a failover green->blue saying why", st.ActiveVersion, fo)
			}
			if releaseHealthy(r.green) != "r1" {
				t.Errorf("green was not restarted as the standby: answers %q", releaseHealthy(r.green))
			}
			r.waitServedBy("blue")
		})
	}
}

// TestReliabilityBalancerFaults: the builtin proxy fails during a switch in
// three ways; each time the switch exits 1 naming the problem, the state
// still says green, the failure is in the history, and traffic stays on green.
func TestReliabilityBalancerFaults(t *testing.T) {
	cases := []struct {
		name  string
		fault func(t *testing.T, r *rig) (undo func())
		want  string
	}{
		{"frozen (SIGSTOP)", func(t *testing.T, r *rig) func() {
			pid := r.state().ProxyPID
			syscall.Kill(pid, syscall.SIGSTOP)
			return func() { syscall.Kill(pid, syscall.SIGCONT) }
		}, "builtin proxy"},
		{"port taken by something else", func(t *testing.T, r *rig) func() {
			killProxy(t, r)
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", r.proxy))
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.NotFoundHandler()}
			go srv.Serve(ln)
			return func() { srv.Close() }
		}, "not a bgd proxy"},
		// Once "never confirms"; now refused at once, naming both state files
		// (the never-confirming proxy is a unit test in lb/builtin).
		{"a bgd proxy of another state file", func(t *testing.T, r *rig) func() {
			killProxy(t, r)
			other := filepath.Join(t.TempDir(), "other.json")
			os.WriteFile(other, []byte(strings.Replace(validState, `"generation": 3`, `"generation": 1`, 1)), 0o600)
			cmd := exec.Command(bgdBin, "--config", r.cfgPath, "--state-file", other, "proxy")
			cmd.Dir = r.dir
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r.track(cmd.Process.Pid)
			waitListening(t, r.proxy, 5*time.Second)
			return func() { cmd.Process.Kill(); cmd.Wait() }
		}, "a bgd proxy of another state file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := deployed(t, rigOptions{})
			before := r.state()
			undo := tc.fault(t, r)
			start := time.Now()
			out, stderr, code := r.run("switch", "blue")
			took := time.Since(start)
			undo()
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("switch blue: exit %d after %s, want 1 naming %q:\n%s%s", code, took, tc.want, out, stderr)
			}
			st := r.state()
			last := st.History[len(st.History)-1]
			if st.ActiveVersion != "green" || last.Action != "switch" || last.Status != state.StatusFailed {
				t.Errorf("state after the failed switch: active %s, last history %+v; want green and a failed switch", st.ActiveVersion, last)
			}
			if st.InProgress != nil {
				t.Errorf("in_progress left behind: %+v", st.InProgress)
			}
			if strings.HasPrefix(tc.name, "frozen") {
				r.waitServedBy("green") // the thawed proxy never moved
			}
			if before.ActiveVersion != st.ActiveVersion {
				t.Errorf("active changed from %s to %s", before.ActiveVersion, st.ActiveVersion)
			}
			// Once the fault is gone, the same switch works.
			r.must("switch", "blue")
			r.waitServedBy("blue")
		})
	}
}

// killProxy stops the proxy bgd started and waits until its port is free.
func killProxy(t *testing.T, r *rig) {
	t.Helper()
	pid := r.state().ProxyPID
	if pid == 0 {
		t.Fatal("no proxy pid in the state")
	}
	killGroup(pid)
	waitFor(t, 5*time.Second, "the proxy port to be free", func() bool {
		_, held := slots.ListenerOf(r.proxy)
		return !held
	})
}

// inMountNamespace runs script with sh in a private mount namespace, so
// mounts made for a fault vanish with it. Tests run as root, where chmod
// cannot make a directory read-only: a read-only bind mount or a full
// tmpfs is the honest way.
func inMountNamespace(t *testing.T, script string) string {
	t.Helper()
	unshare := requireBinary(t, "unshare")
	out, err := exec.Command(unshare, "-m", "sh", "-c", "mount --make-rprivate / 2>/dev/null; "+script).CombinedOutput()
	if err != nil && strings.Contains(string(out), "unshare failed") {
		if os.Getenv("CI") != "" {
			t.Fatalf("cannot create a mount namespace (CAP_SYS_ADMIN needed): %s", out)
		}
		t.Skipf("SKIP (loud): no mount namespace here: %s", out)
	}
	return string(out)
}

// TestReliabilityStateDirFaults: the state directory cannot be written: a
// clear error naming the path, the state file unchanged, no temp file, no
// slot started, traffic untouched.
func TestReliabilityStateDirFaults(t *testing.T) {
	t.Run("parent is a file", func(t *testing.T) {
		r := newRig(t, rigOptions{})
		blocker := filepath.Join(r.dir, "blocker")
		os.WriteFile(blocker, []byte("x"), 0o600)
		_, stderr, code := r.run("--state-file", filepath.Join(blocker, "bg_state.json"), "start", "blue")
		if code != 2 || !strings.Contains(stderr, blocker) || !strings.Contains(stderr, "not a directory") {
			t.Errorf("start with the state under a file: exit %d, want 2 (an unusable state path) naming %s:\n%s", code, blocker, stderr)
		}
		if _, held := slots.ListenerOf(r.blue); held {
			t.Error("a slot was started although its state cannot be written")
		}
	})

	r := deployed(t, rigOptions{})
	stateDir := filepath.Dir(r.statePath)
	before, _ := os.ReadFile(r.statePath)
	report := fmt.Sprintf(`; echo "rc=$?"; echo ---; cat %[1]s/bg_state.json; echo ---; ls -a %[1]s`, stateDir)
	bgdCmd := fmt.Sprintf("%s --config %s", bgdBin, r.cfgPath)
	save := t.TempDir()
	exec.Command("cp", "-a", stateDir+"/.", save).Run()
	// A read-only state directory is an unusable state path (exit 2: fix
	// the setup); a full disk is a failure of the operation (exit 1).
	cases := []struct {
		name, setup, want, rc string
	}{
		{"read-only", fmt.Sprintf("mount --bind %[1]s %[1]s && mount -o remount,bind,ro %[1]s", stateDir), "read-only file system", "rc=2"},
		{"full", fmt.Sprintf("mount -t tmpfs -o size=128k tmpfs %[1]s && cp -a %[2]s/. %[1]s && (dd if=/dev/zero of=%[1]s/filler bs=4k 2>/dev/null; true)", stateDir, save), "no space left on device", "rc=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"switch blue", "deploy", "health-check"} {
				out := inMountNamespace(t, fmt.Sprintf("cd %s && %s && %s %s 2>&1%s", r.dir, tc.setup, bgdCmd, cmd, report))
				msg, rest, _ := strings.Cut(out, "---\n")
				content, listing, _ := strings.Cut(rest, "---\n")
				if !strings.Contains(msg, tc.rc) || !strings.Contains(msg, tc.want) || !strings.Contains(msg, ".local_context") {
					t.Errorf("%s: want %s naming the state path and %q, got:\n%s", cmd, tc.rc, tc.want, msg)
				}
				t.Logf("%s: %s", cmd, strings.TrimSpace(msg))
				if content != string(before) {
					t.Errorf("%s: the state file changed inside the namespace:\n%s", cmd, content)
				}
				if strings.Contains(listing, ".tmp-") {
					t.Errorf("%s: a temp file was left behind:\n%s", cmd, listing)
				}
			}
			// Outside the namespace nothing moved.
			if now, _ := os.ReadFile(r.statePath); string(now) != string(before) {
				t.Error("the state file changed")
			}
			if got := r.servedBy(); got != "green" {
				t.Errorf("traffic moved to %q", got)
			}
			if _, stderr, code := r.run("status"); code != 0 {
				t.Errorf("status: exit %d\n%s", code, stderr)
			}
		})
	}
}

// TestReliabilityStopGrace: a slot that ignores SIGTERM is SIGKILLed, with
// its whole process group, once stop_grace has passed.
func TestReliabilityStopGrace(t *testing.T) {
	const grace = time.Second
	r := newRig(t, rigOptions{stopGrace: grace, command: []string{"/bin/sh", "-c",
		"trap '' TERM; " + bgdBin + " demo-app --port {{.Port}} --color {{.Color}} --release {{.Release}}; exec sleep 60"}})
	r.must("start", "blue")
	r.must("start", "green")
	pid := r.state().GreenPID
	start := time.Now()
	r.must("stop", "green")
	took := time.Since(start)
	if took < grace || took > grace+5*time.Second {
		t.Errorf("stop took %s, want stop_grace (%s) and a little", took, grace)
	}
	if slots.Alive(pid) {
		t.Errorf("the slot's pid %d survived stop", pid)
	}
	if pids := slots.FindByEnv("PORT="+strconv.Itoa(r.green), "BG_COLOR=green"); len(pids) > 0 {
		t.Errorf("processes of the slot's group survived: %v", pids)
	}
	if st := r.state(); st.GreenPID != 0 {
		t.Errorf("green_pid %d after stop, want 0", st.GreenPID)
	}
}

// TestReliabilitySecurity: file modes, no shell, loopback-only admin pages.
func TestReliabilitySecurity(t *testing.T) {
	t.Run("file modes", func(t *testing.T) {
		r := deployed(t, rigOptions{})
		stateDir := filepath.Dir(r.statePath)
		cases := []struct {
			path string
			max  os.FileMode // no permission bit beyond these
		}{
			{r.statePath, 0o600},
			{r.statePath + ".lock", 0o600},
			{filepath.Join(stateDir, "logs", "app-blue.log"), 0o640},
			{filepath.Join(stateDir, "logs", "app-green.log"), 0o640},
			{filepath.Join(stateDir, "logs", "app-proxy.log"), 0o640},
			{stateDir, 0o750},
			{filepath.Join(stateDir, "logs"), 0o750},
		}
		for _, c := range cases {
			fi, err := os.Stat(c.path)
			if err != nil {
				t.Error(err)
				continue
			}
			if perm := fi.Mode().Perm(); perm&^c.max != 0 || perm&0o600 != 0o600 {
				t.Errorf("%s: mode %v, want at most %v", c.path, perm, c.max)
			}
		}
	})

	t.Run("slot commands never run through a shell", func(t *testing.T) {
		dir := t.TempDir()
		evil := fmt.Sprintf("r1; touch %[1]s/a && touch %[1]s/b | touch %[1]s/c $(touch %[1]s/d) `touch %[1]s/e` > %[1]s/f", dir)
		r := newRig(t, rigOptions{command: []string{bgdBin, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", evil}})
		r.must("start", "blue")
		if got := releaseHealthy(r.blue); got != evil {
			t.Errorf("the slot got release %q, want the argument verbatim %q", got, evil)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("a shell ran the command: %d files were created in %s", len(entries), dir)
		}
	})

	t.Run("admin pages answer loopback clients only", func(t *testing.T) {
		// A real non-loopback client: a network namespace of the test's
		// own, where `bgd proxy` and its slot run, and a client connects
		// once to 127.0.0.1 and once to the namespace's 10.x address, which
		// is then the connection's source address.
		for _, shared := range []bool{true, false} {
			// shared: admin_listen is the service's listen itself, where
			// the admin paths shadow the app's, for loopback clients only.
			// Otherwise a loopback port of its own: on the service port
			// every client reaches the app.
			ns := newNetNamespace(t)
			dir := t.TempDir()
			blue, green, port, adminPort := freePort(t), freePort(t), freePort(t), freePort(t)
			admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
			if shared {
				admin = fmt.Sprintf("0.0.0.0:%d", port)
			}
			t.Logf("admin_listen %s, listen 0.0.0.0:%d", admin, port)
			cfgPath := filepath.Join(dir, "bluegreen.yml")
			cfg := fmt.Sprintf(`state_dir: %q
services:
  app:
    command: [%q, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"]
    blue: {port: %d}
    green: {port: %d}
    lb: {driver: builtin, builtin: {listen: "0.0.0.0:%d", admin_listen: %q}}
`, filepath.Join(dir, "state"), bgdBin, blue, green, port, admin)
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			slot := ns.start(t, bgdBin, "demo-app", "--port", strconv.Itoa(blue), "--color", "blue", "--release", "r1")
			st := state.New(blue, green)
			st.BluePID, st.BlueRelease, st.BlueHealthy = slot.Process.Pid, "r1", true
			if err := (&state.Store{Path: filepath.Join(dir, "state", "bg_state.json")}).Save(st); err != nil {
				t.Fatal(err)
			}
			ns.start(t, bgdBin, "--config", cfgPath, "proxy")
			ns.waitListening(t, "127.0.0.1", blue, 5*time.Second)
			ns.waitListening(t, "127.0.0.1", port, 5*time.Second)

			client := ns.client()
			get := func(host string, port int, path string) (int, string, error) {
				t.Helper()
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/%s", net.JoinHostPort(host, strconv.Itoa(port)), strings.TrimPrefix(path, "/")), nil)
				// None of these may buy access: only the connection's address counts.
				req.Header.Set("X-Forwarded-For", "127.0.0.1")
				req.Header.Set("X-Real-IP", "127.0.0.1")
				req.Header.Set("Forwarded", "for=127.0.0.1")
				resp, err := client.Do(req)
				if err != nil {
					return 0, "", err
				}
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 200)) // enough to tell the answers apart
				resp.Body.Close()
				return resp.StatusCode, string(body), nil
			}
			must := func(host string, port int, path string) (int, string) {
				t.Helper()
				code, body, err := get(host, port, path)
				if err != nil {
					t.Fatalf("GET %s from %s on port %d: %v", path, host, port, err)
				}
				return code, body
			}
			paths := []string{"/metrics", "/monitoring", builtin.RoutePath}
			adminAt := port
			if !shared {
				adminAt = adminPort
			}
			for _, path := range paths {
				if code, body := must("127.0.0.1", adminAt, path); code != http.StatusOK || strings.Contains(body, "color=blue") {
					t.Errorf("GET %s from 127.0.0.1 on the admin port %d: %d %q, want the proxy's 200", path, adminAt, code, body)
				}
			}
			t.Logf("non-loopback client: real connections from %s inside the namespace", ns.addr)
			for _, path := range paths {
				code, body := must(ns.addr, port, path)
				switch {
				case shared && (code != http.StatusForbidden || !strings.Contains(body, "only loopback clients")):
					t.Errorf("GET %s from %s: %d %q, want 403", path, ns.addr, code, body)
				case !shared && (code != http.StatusOK || !strings.Contains(body, "color=blue")):
					t.Errorf("GET %s from %s on the service port, admin apart: %d %q, want the blue slot's answer", path, ns.addr, code, body)
				}
			}
			if !shared {
				if code, body, err := get(ns.addr, adminPort, "/metrics"); err == nil {
					t.Errorf("GET /metrics from %s on the loopback admin port: %d %q, want no connection", ns.addr, code, body)
				}
			}
			// Only admin pages are refused: the service itself answers.
			if code, body := must(ns.addr, port, "/"); code != http.StatusOK || !strings.Contains(body, "color=blue") {
				t.Errorf("GET / from %s: %d %q, want 200 from the blue slot", ns.addr, code, body)
			}
		}
	})
}
