package slots

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be a real slot process: BGD_SLOT_HELPER
// selects its behaviour.
func TestMain(m *testing.M) {
	switch os.Getenv("BGD_SLOT_HELPER") {
	case "":
		os.Exit(m.Run())
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		sleepForever()
	case "term-ok":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		os.Exit(0)
	case "group":
		// A leader that ignores SIGTERM and a child of it that also holds on.
		signal.Ignore(syscall.SIGTERM)
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), "BGD_SLOT_HELPER=ignore-term")
		child.Stdout = os.Stdout
		if err := child.Start(); err != nil {
			os.Exit(4)
		}
		fmt.Println(child.Process.Pid)
		sleepForever()
	case "sleep":
		sleepForever()
	case "exit":
		code, _ := strconv.Atoi(os.Getenv("BGD_SLOT_CODE"))
		fmt.Println("args:", strings.Join(os.Args[1:], "|"))
		fmt.Println("env:", os.Getenv("PORT"), os.Getenv("BG_COLOR"))
		os.Exit(code)
	case "listen":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			os.Exit(4)
		}
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		sleepForever()
	}
	os.Exit(3)
}

// helperSpec is a Spec that runs this test binary as a helper.
func helperSpec(t *testing.T, mode string, env ...string) Spec {
	return Spec{
		Argv:    []string{os.Args[0], "-test.run=^$"},
		Env:     append([]string{"BGD_SLOT_HELPER=" + mode}, env...),
		LogPath: filepath.Join(t.TempDir(), "logs", "app-blue.log"),
		Marker:  []string{"BGD_TEST_SLOT=" + t.Name()},
	}
}

// startHelper starts a helper with StartProcess and kills its group at the end.
func startHelper(t *testing.T, mode string, env ...string) (*Process, Spec) {
	t.Helper()
	spec := helperSpec(t, mode, env...)
	p, err := StartProcess(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-p.PID, syscall.SIGKILL)
		<-p.Exited
	})
	return p, spec
}

// waitLog polls the log until it contains s.
func waitLog(t *testing.T, path, s string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), s) {
			return string(data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s never contained %q; it holds:\n%s", path, s, data)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitNumber polls the log until a line holds only a number, and returns it.
func waitNumber(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(data), "\n") {
			if n, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s never held a number; it holds:\n%s", path, data)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func serverPort(t *testing.T, srv *httptest.Server) int {
	t.Helper()
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

func TestProbe(t *testing.T) {
	var lastPath atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if code == 0 {
			code = 200
		}
		w.WriteHeader(code)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/endless", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	recordPath := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastPath.Store(r.URL.Path)
		mux.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(recordPath)
	t.Cleanup(srv.Close)
	port := serverPort(t, srv)
	closed := httptest.NewServer(mux)
	closedPort := serverPort(t, closed)
	closed.Close()

	cases := []struct {
		name       string
		c          Checker
		port       int
		wantErr    bool
		wantStatus int
		within     time.Duration
	}{
		{"200 is healthy", Checker{Path: "/health"}, port, false, 0, time.Second},
		{"204 is a 2xx", Checker{Path: "/status/204"}, port, false, 0, time.Second},
		{"503 is not", Checker{Path: "/status/503"}, port, true, 503, time.Second},
		{"3xx is not healthy", Checker{Path: "/status/302"}, port, true, 302, time.Second},
		{"expect_status 200 refuses 204", Checker{Path: "/status/204", Expect: 200}, port, true, 204, time.Second},
		{"expect_status 204 takes 204", Checker{Path: "/status/204", Expect: 204}, port, false, 0, time.Second},
		{"expect_status 503 takes 503", Checker{Path: "/status/503", Expect: 503}, port, false, 0, time.Second},
		{"connection refused", Checker{Path: "/health"}, closedPort, true, 0, time.Second},
		{"request timeout", Checker{Path: "/slow", RequestTimeout: 100 * time.Millisecond}, port, true, 0, 2 * time.Second},
		{"endless body is not read to the end", Checker{Path: "/endless"}, port, false, 0, 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.c.Probe(context.Background(), "127.0.0.1", tc.port)
			if d := time.Since(start); d > tc.within {
				t.Errorf("Probe took %s, want under %s", d, tc.within)
			}
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Probe = %v, want healthy", err)
				}
				if tc.port == port && lastPath.Load() != tc.c.Path {
					t.Errorf("probed path %v, want %s", lastPath.Load(), tc.c.Path)
				}
				return
			}
			var pe *ProbeError
			if !errors.As(err, &pe) || !errors.Is(err, ErrNotHealthy) {
				t.Fatalf("Probe = %v, want a *ProbeError matching ErrNotHealthy", err)
			}
			if pe.Status != tc.wantStatus {
				t.Errorf("status %d, want %d", pe.Status, tc.wantStatus)
			}
			if want := fmt.Sprintf("127.0.0.1:%d%s", tc.port, tc.c.Path); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		})
	}
}

// TestWaitHealthy: fast probes first (a slot ready after 100 ms is seen long
// before the 1 s interval), a process exit ends the wait at once, and the
// timeout is honoured.
func TestWaitHealthy(t *testing.T) {
	ready := time.Now().Add(100 * time.Millisecond)
	var probes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if time.Now().Before(ready) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	c := &Checker{Path: "/health"}

	t.Run("fast first probes", func(t *testing.T) {
		start := time.Now()
		err := c.WaitHealthy(context.Background(), "127.0.0.1", serverPort(t, srv), Wait{Timeout: 10 * time.Second, Interval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 600*time.Millisecond {
			t.Errorf("healthy after %s, want soon after 100ms (fast probes, not the 1s interval)", d)
		}
		if n := probes.Load(); n < 2 {
			t.Errorf("%d probes, want several fast ones", n)
		}
	})

	t.Run("exit of a real process fails at once", func(t *testing.T) {
		p, spec := startHelper(t, "exit", "BGD_SLOT_CODE=3")
		start := time.Now()
		err := c.WaitHealthy(context.Background(), "127.0.0.1", freePort(t), Wait{Timeout: 30 * time.Second, Exited: p.Exited})
		if !errors.Is(err, ErrExited) {
			t.Fatalf("WaitHealthy = %v, want ErrExited", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("exit noticed after %s, want at once (timeout is 30s)", d)
		}
		var ee *exec.ExitError
		if !errors.As(p.ExitErr(), &ee) || ee.ExitCode() != 3 {
			t.Errorf("ExitErr = %v, want exit status 3", p.ExitErr())
		}
		if tail := LogTail(spec.LogPath, 10); !strings.Contains(tail, "args:") {
			t.Errorf("log tail %q lacks the process's output", tail)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		var seen atomic.Int32
		err := c.WaitHealthy(context.Background(), "127.0.0.1", freePort(t), Wait{Timeout: 300 * time.Millisecond,
			OnProbe: func(time.Duration, error) { seen.Add(1) }})
		d := time.Since(start)
		if !errors.Is(err, ErrNotHealthy) || !strings.Contains(err.Error(), "not healthy after 300ms") {
			t.Errorf("WaitHealthy = %v, want not healthy after 300ms", err)
		}
		if d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("gave up after %s, want about 300ms", d)
		}
		if seen.Load() < 2 {
			t.Errorf("OnProbe called %d times, want every failed probe", seen.Load())
		}
	})

	t.Run("context cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		err := c.WaitHealthy(ctx, "127.0.0.1", freePort(t), Wait{Timeout: 30 * time.Second})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("WaitHealthy = %v, want context.Canceled", err)
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestStop: SIGTERM first; a process that ignores it is SIGKILLed after
// the grace period, with its whole process group.
func TestStop(t *testing.T) {
	const grace = 300 * time.Millisecond
	cases := []struct {
		name      string
		mode      string
		grace     time.Duration
		minTime   time.Duration
		maxTime   time.Duration
		wantKill  bool // ended by SIGKILL, not by its own exit on SIGTERM
		grandkid  bool
		alreadyGo bool
	}{
		// A generous grace: the process must end by itself well before it.
		{"handles SIGTERM", "term-ok", 10 * time.Second, 0, 5 * time.Second, false, false, false},
		{"ignores SIGTERM", "ignore-term", grace, grace, grace + 5*time.Second, true, false, false},
		{"group ignores SIGTERM", "group", grace, grace, grace + 5*time.Second, true, true, false},
		{"already gone", "exit", grace, 0, time.Second, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, spec := startHelper(t, tc.mode)
			grandkid := 0
			if tc.alreadyGo {
				<-p.Exited
			} else {
				if tc.grandkid {
					grandkid = waitNumber(t, spec.LogPath)
					waitLog(t, spec.LogPath, "ready")
					if !Alive(grandkid) {
						t.Fatalf("grandchild %d is not alive", grandkid)
					}
					if !InGroup(grandkid, p.PID) {
						t.Errorf("grandchild %d is not in the slot's group %d", grandkid, p.PID)
					}
				} else {
					waitLog(t, spec.LogPath, "ready")
				}
			}
			start := time.Now()
			if err := Stop(context.Background(), p.Identity, tc.grace); err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			if d < tc.minTime || d > tc.maxTime {
				t.Errorf("Stop took %s, want %s to %s", d, tc.minTime, tc.maxTime)
			}
			if Alive(p.PID) {
				t.Errorf("pid %d alive after Stop", p.PID)
			}
			if grandkid != 0 && waitDead(grandkid) {
				t.Errorf("grandchild %d alive after Stop: the group was not killed", grandkid)
			}
			if tc.alreadyGo {
				return
			}
			<-p.Exited
			var ee *exec.ExitError
			if !errors.As(p.ExitErr(), &ee) {
				if tc.wantKill {
					t.Fatalf("ExitErr = %v, want killed", p.ExitErr())
				}
				return
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if killed := ws.Signaled() && ws.Signal() == syscall.SIGKILL; killed != tc.wantKill {
				t.Errorf("ended by %v (killed %v), want killed %v", ee, killed, tc.wantKill)
			}
		})
	}
}

// waitDead reports whether pid is still alive after a short wait (an
// orphaned grandchild is reaped by init, not by us).
func waitDead(pid int) bool {
	for range 200 {
		if !Alive(pid) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func TestAlive(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BGD_SLOT_HELPER=ignore-term")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(out).ReadString('\n')
	pid := cmd.Process.Pid
	if !Alive(pid) {
		t.Errorf("running child %d not alive", pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	// Not reaped yet: a zombie, which must not count as alive.
	deadline := time.Now().Add(5 * time.Second)
	for Alive(pid) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if Alive(pid) {
		t.Errorf("killed (zombie) child %d still alive", pid)
	}
	cmd.Wait()
	cases := []struct {
		name string
		pid  int
		want bool
	}{
		{"self", os.Getpid(), true},
		{"zero", 0, false},
		{"negative", -1, false},
		{"reaped child", pid, false},
	}
	for _, c := range cases {
		if got := Alive(c.pid); got != c.want {
			t.Errorf("%s: Alive(%d) = %v, want %v", c.name, c.pid, got, c.want)
		}
	}
}

func TestListenerOf(t *testing.T) {
	t.Run("this process", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		owner, ok := ListenerOf(port)
		if !ok || owner.PID != os.Getpid() || !strings.Contains(owner.Command, filepath.Base(os.Args[0])) {
			t.Errorf("ListenerOf(%d) = %+v, %v; want pid %d running %s", port, owner, ok, os.Getpid(), os.Args[0])
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			t.Logf("no IPv6 loopback here (%v): only IPv4 was checked", err)
			return
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		if owner, ok := ListenerOf(port); !ok || owner.PID != os.Getpid() {
			t.Errorf("ListenerOf(%d) on [::1] = %+v, %v; want pid %d", port, owner, ok, os.Getpid())
		}
	})
	t.Run("a child process", func(t *testing.T) {
		p, spec := startHelper(t, "listen")
		port := waitNumber(t, spec.LogPath)
		owner, ok := ListenerOf(port)
		if !ok || owner.PID != p.PID {
			t.Fatalf("ListenerOf(%d) = %+v, %v; want the child %d", port, owner, ok, p.PID)
		}
		if pg, err := syscall.Getpgid(p.PID); err != nil || pg != p.PID {
			t.Errorf("syscall.Getpgid(%d) = %d, %v; want its own group", p.PID, pg, err)
		}
		if !InGroup(owner.PID, p.PID) || InGroup(os.Getpid(), p.PID) {
			t.Error("InGroup does not tell the slot's group from the test's")
		}
	})
	t.Run("nobody", func(t *testing.T) {
		port := freePort(t)
		if owner, ok := ListenerOf(port); ok {
			t.Errorf("ListenerOf(free port %d) = %+v, true", port, owner)
		}
	})
}

// TestStartProcess: argv is run as is (no shell), the environment is
// passed, the log is 0640 at most and appended to.
func TestStartProcess(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	marker := filepath.Join(t.TempDir(), "PWNED")
	evil := "x; touch " + marker + " $(touch " + marker + ") `touch " + marker + "` | touch " + marker
	spec := helperSpec(t, "exit", "PORT=7101", "BG_COLOR=blue")
	spec.Argv = append(spec.Argv, evil, "{{.Port}}")
	for i := range 2 {
		p, err := StartProcess(spec)
		if err != nil {
			t.Fatal(err)
		}
		<-p.Exited
		if p.ExitErr() != nil {
			t.Fatalf("run %d: %v", i, p.ExitErr())
		}
	}
	log, _ := os.ReadFile(spec.LogPath)
	if n := strings.Count(string(log), "args: -test.run=^$|"+evil+"|{{.Port}}\n"); n != 2 {
		t.Errorf("log has the literal argv %d times, want 2 (appended):\n%s", n, log)
	}
	if !strings.Contains(string(log), "env: 7101 blue") {
		t.Errorf("log lacks the environment:\n%s", log)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a shell ran the command: the marker file exists")
	}
	fi, err := os.Stat(spec.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("log mode %v, want 0640", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(spec.LogPath)); di.Mode().Perm() != 0o750 {
		t.Errorf("log directory mode %v, want 0750", di.Mode().Perm())
	}

	errCases := []struct {
		name string
		argv []string
		want string
	}{
		{"empty argv", nil, "empty command"},
		{"empty program", []string{""}, "empty command"},
		{"missing program", []string{"/nonexistent/server"}, "/nonexistent/server"},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := StartProcess(Spec{Argv: c.argv, LogPath: spec.LogPath, Marker: spec.Marker})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("StartProcess(%q) = %v, want an error naming %q", c.argv, err, c.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	v := Vars{Port: 7101, Color: "green", Release: "r9"}
	cases := []struct {
		name    string
		argv    []string
		dir     string
		want    string
		wantDir string
		wantErr string
	}{
		{"all vars", []string{"srv", "--port={{.Port}}", "{{.Color}}-{{.Release}}"}, "rel/{{.Release}}", "srv --port=7101 green-r9", "rel/r9", ""},
		{"no template", []string{"a b", "$(x)"}, "", "a b $(x)", "", ""},
		{"unknown field", []string{"{{.Nope}}"}, "", "", "", "Nope"},
		{"syntax error", []string{"{{.Port"}, "", "", "", "{{.Port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			argv, dir, err := Expand(c.argv, c.dir, v)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("Expand = %v, want an error naming %q", err, c.wantErr)
				}
				return
			}
			if err != nil || strings.Join(argv, " ") != c.want || dir != c.wantDir {
				t.Errorf("Expand = %q, %q, %v; want %q, %q", argv, dir, err, c.want, c.wantDir)
			}
		})
	}
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	os.WriteFile(path, []byte(b.String()), 0o600)
	if got := LogTail(path, 3); got != "line 97\nline 98\nline 99" {
		t.Errorf("LogTail = %q", got)
	}
	if got := LogTail(filepath.Join(t.TempDir(), "missing"), 3); got != "" {
		t.Errorf("LogTail of a missing file = %q, want \"\"", got)
	}
}

func TestFindByEnv(t *testing.T) {
	p, spec := startHelper(t, "ignore-term", "PORT=64999", "BG_COLOR=green", "BG_RELEASE=r7")
	waitLog(t, spec.LogPath, "ready")
	cases := []struct {
		name  string
		pairs []string
		want  bool
	}{
		{"port and colour", []string{"PORT=64999", "BG_COLOR=green"}, true},
		{"all three", []string{"PORT=64999", "BG_COLOR=green", "BG_RELEASE=r7"}, true},
		{"other colour", []string{"PORT=64999", "BG_COLOR=blue"}, false},
		{"other port", []string{"PORT=64998", "BG_COLOR=green"}, false},
		{"nothing asked", nil, false},
	}
	for _, c := range cases {
		found := false
		for _, pid := range FindByEnv(c.pairs...) {
			found = found || pid == p.PID
		}
		if found != c.want {
			t.Errorf("%s: FindByEnv(%q) found the slot: %v, want %v", c.name, c.pairs, found, c.want)
		}
	}
}

// sleepForever blocks a helper process until it is killed. Not `select {}`:
// in a binary built without cgo, a process whose only goroutine blocks there
// dies with "all goroutines are asleep - deadlock!".
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}
