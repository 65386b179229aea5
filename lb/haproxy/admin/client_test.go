package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb/lbtest"
)

// fake is a runtime API server speaking HAProxy's non-interactive protocol:
// read one line, answer, close. It records what it received.
type fake struct {
	Addr string

	mu         sync.Mutex
	commands   []string
	halfClosed []bool // whether the client closed its side after the line
	conns      int
}

func (f *fake) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

// shortDir is a temp dir whose path fits in a unix socket address (108 bytes).
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startFake serves answer(command) on a unix socket until the test ends.
// An answer of "<hang>" never answers (to test deadlines).
func startFake(t testing.TB, answer func(cmd string) string) *fake {
	t.Helper()
	path := filepath.Join(shortDir(t), "admin.sock")
	f := &fake{Addr: path}
	lbtest.ServeLines(t, path, func(c net.Conn, r *bufio.Reader, cmd string) {
		ans := answer(cmd)
		_, eofErr := r.ReadByte()
		f.mu.Lock()
		f.commands = append(f.commands, cmd)
		f.halfClosed = append(f.halfClosed, eofErr == io.EOF)
		f.conns++
		f.mu.Unlock()
		if ans == "<hang>" {
			<-t.Context().Done()
			return
		}
		io.WriteString(c, ans)
	})
	return f
}

func TestExecReadsToEOFOneConnectionPerCommand(t *testing.T) {
	big := strings.Repeat("x", 1<<20) + "\n\n" // many reads' worth
	f := startFake(t, func(cmd string) string { return big })
	c := New(f.Addr)
	for range 3 {
		ans, err := c.Exec(context.Background(), "show stat")
		if err != nil {
			t.Fatal(err)
		}
		if ans != big {
			t.Fatalf("answer: %d bytes, want %d", len(ans), len(big))
		}
	}
	if f.conns != 3 {
		t.Errorf("%d connections for 3 commands, want 3", f.conns)
	}
	for i, hc := range f.halfClosed {
		if !hc {
			t.Errorf("command %d: client did not half-close after its line (the master CLI waits for that)", i)
		}
	}
}

func TestMaxAnswer(t *testing.T) {
	f := startFake(t, func(string) string { return strings.Repeat("y", 100) })
	c := &Client{Addr: f.Addr, MaxAnswer: 99}
	if _, err := c.Exec(context.Background(), "show stat"); err == nil || !strings.Contains(err.Error(), "larger than 99 bytes") {
		t.Errorf("err %v, want an answer-too-large error", err)
	}
}

func TestDoTurnsAnyAnswerIntoCommandError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
		is     error // sentinel the error unwraps to; nil for none
	}{
		{"success is a blank line", "\n", nil},
		{"entry not found", "entry not found.\n\n", ErrEntryNotFound},
		{"unknown map", "Unknown map identifier. Please use #<id> or <file>.\n\n", ErrUnknownMap},
		{"permission", "Permission denied\n\n", ErrPermission},
		{"unparsable value", "unable to parse 'app_blue'.\n\n", nil},
		{"unknown command", answer(t, "master_cli_unknown_command.txt"), ErrUnknownCommand},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(string) string { return tc.answer })
			err := New(f.Addr).SetMap(context.Background(), "/etc/haproxy/bgd.map", "app", "app_green")
			if strings.TrimSpace(tc.answer) == "" {
				if err != nil {
					t.Fatalf("blank answer: %v", err)
				}
				return
			}
			var ce *CommandError
			if !errors.As(err, &ce) {
				t.Fatalf("err %v, want a *CommandError", err)
			}
			if ce.Command != "set map /etc/haproxy/bgd.map app app_green" || ce.Answer != strings.TrimSpace(tc.answer) {
				t.Errorf("CommandError %+v", ce)
			}
			firstLine, _, _ := strings.Cut(strings.TrimSpace(tc.answer), "\n")
			if !strings.Contains(err.Error(), firstLine) {
				t.Errorf("error %q does not carry HAProxy's text %q", err, firstLine)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error does not unwrap to %v", tc.is)
			}
		})
	}
}

func TestQueriesRecogniseErrorTexts(t *testing.T) {
	unknownMap := answer(t, "get_map_unknown.txt")
	f := startFake(t, func(cmd string) string {
		switch {
		case strings.HasPrefix(cmd, "get map"):
			return unknownMap
		}
		return answer(t, "unknown_command.txt")
	})
	c := New(f.Addr)
	ctx := context.Background()
	if _, err := c.GetMap(ctx, "/x.map", "app"); !errors.Is(err, ErrUnknownMap) {
		t.Errorf("GetMap: %v, want ErrUnknownMap", err)
	}
	if _, err := c.ShowBackends(ctx); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("ShowBackends: %v, want ErrUnknownCommand", err)
	}
	if _, err := c.ShowStat(ctx, ""); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("ShowStat: %v, want ErrUnknownCommand", err)
	}
	if _, err := c.ShowMaps(ctx); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("ShowMaps: %v, want ErrUnknownCommand", err)
	}
}

func TestTypedHelpersSendTheRightCommands(t *testing.T) {
	f := startFake(t, func(cmd string) string {
		switch {
		case cmd == "show backend":
			return answer(t, "show_backend.txt")
		case strings.HasPrefix(cmd, "show stat"):
			return answer(t, "show_stat_backend.txt")
		case strings.HasPrefix(cmd, "get map"):
			return answer(t, "get_map_found.txt")
		case cmd == "show map":
			return answer(t, "show_map_list.txt")
		}
		return "\n"
	})
	c, ctx := New("unix://"+f.Addr), context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.ShowBackends(ctx)
	must(err)
	_, err = c.ShowStat(ctx, "app_blue")
	must(err)
	m, err := c.GetMap(ctx, "/m.map", "app")
	must(err)
	if m.Value != "app_blue" {
		t.Errorf("GetMap value %q", m.Value)
	}
	must(c.SetMap(ctx, "/m.map", "app", "app_green"))
	must(c.AddMap(ctx, "/m.map", "app", "app_green"))
	must(c.DelMap(ctx, "/m.map", "app"))
	_, err = c.ShowMaps(ctx)
	must(err)
	want := []string{"show backend", "show stat app_blue 4 -1", "get map /m.map app",
		"set map /m.map app app_green", "add map /m.map app app_green", "del map /m.map app", "show map"}
	if got := f.received(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("sent\n%q\nwant\n%q", got, want)
	}
}

func TestBadArgumentsAreNeverSent(t *testing.T) {
	f := startFake(t, func(string) string { return "\n" })
	c, ctx := New(f.Addr), context.Background()
	for _, tc := range []struct{ key, value string }{
		{"app;show", "x"}, {"app", "x;del map /m.map other"}, {"a b", "x"}, {"app", "x\ny"},
		{"app", `x\;y`}, {"", "x"}, {"app", ""}, {"app", "x\x00"},
	} {
		if err := c.SetMap(ctx, "/m.map", tc.key, tc.value); !errors.Is(err, ErrBadArgument) {
			t.Errorf("SetMap(%q, %q): %v, want ErrBadArgument", tc.key, tc.value, err)
		}
	}
	if _, err := c.Exec(ctx, "show stat; show info"); !errors.Is(err, ErrBadArgument) {
		t.Errorf("Exec with ';': %v, want ErrBadArgument", err)
	}
	if got := f.received(); len(got) != 0 {
		t.Errorf("sent %q", got)
	}
}

func TestDeadline(t *testing.T) {
	f := startFake(t, func(string) string { return "<hang>" })
	c := &Client{Addr: f.Addr, Timeout: 100 * time.Millisecond}
	start := time.Now()
	_, err := c.Exec(context.Background(), "show stat")
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %s, want a timeout after ~100ms", err, time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want context.DeadlineExceeded", err)
	}
	// The caller's context bounds the call too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	c.Timeout = time.Minute
	if _, err := c.Exec(ctx, "show stat"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err %v, want context.Canceled", err)
	}
}

func TestUnreachable(t *testing.T) {
	dir := shortDir(t)
	// A socket file nobody listens on any more: connection refused.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	// A TCP port nobody listens on.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedTCP := "tcp://" + tl.Addr().String()
	tl.Close()

	for _, tc := range []struct {
		name, addr string
		cause      error
	}{
		{"missing", filepath.Join(dir, "missing.sock"), fs.ErrNotExist},
		{"refused", stale, syscall.ECONNREFUSED},
		{"tcp refused", closedTCP, syscall.ECONNREFUSED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.addr).ShowBackends(context.Background())
			if !errors.Is(err, ErrUnreachable) || !errors.Is(err, tc.cause) {
				t.Errorf("err %v, want ErrUnreachable and %v", err, tc.cause)
			}
			if !strings.Contains(err.Error(), tc.addr) {
				t.Errorf("error %q does not name %s", err, tc.addr)
			}
		})
	}
}

// TestPermissionDenied dials a socket its user may not write to. Root
// ignores file modes (CAP_DAC_OVERRIDE), so as root the dial runs in a copy
// of this test binary re-executed as nobody (uid 65534): the same kernel
// check a non-root bgd meets in front of HAProxy's "mode 600" root socket.
func TestPermissionDenied(t *testing.T) {
	if os.Getenv("BGD_RUNTIME_DIAL") != "" {
		_, err := New(os.Getenv("BGD_RUNTIME_DIAL")).ShowBackends(context.Background())
		fmt.Printf("unreachable=%v permission=%v err=%v\n", errors.Is(err, ErrUnreachable), errors.Is(err, fs.ErrPermission), err)
		return
	}
	f := startFake(t, func(string) string { return answer(t, "show_backend.txt") })
	if err := os.Chmod(filepath.Dir(f.Addr), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.Addr, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if err := os.Chmod(f.Addr, 0); err != nil {
			t.Fatal(err)
		}
		_, err := New(f.Addr).ShowBackends(context.Background())
		if !errors.Is(err, ErrUnreachable) || !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), f.Addr) {
			t.Fatalf("err %v, want ErrUnreachable, fs.ErrPermission and the path", err)
		}
		return
	}
	out := runAsNobody(t, "TestPermissionDenied", "BGD_RUNTIME_DIAL="+f.Addr)
	if !strings.Contains(out, "unreachable=true permission=true") || !strings.Contains(out, f.Addr) || !strings.Contains(out, "permission denied") {
		t.Fatalf("as nobody: %s\nwant ErrUnreachable, fs.ErrPermission and the path", out)
	}
	if got := f.received(); len(got) != 0 {
		t.Errorf("the server received %q", got)
	}
}

// runAsNobody re-executes this test binary as uid/gid 65534, running only
// the named test, and returns its output. The binary is copied to a
// world-readable directory first: go test's build directory is private.
func runAsNobody(t *testing.T, test string, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "self.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("re-exec as nobody: %v\n%s", err, out)
	}
	return string(out)
}
