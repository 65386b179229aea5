package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/internal/freeport"
	"github.com/bgd-dev/bgd/internal/testsupport"
)

// bgdBin is the bgd binary built from this tree by TestMain.
var bgdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bgd-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	bgdBin = filepath.Join(dir, "bgd")
	build := exec.Command("go", "build", "-o", bgdBin, "../cmd/bgd")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building bgd:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireBinary returns the path of a system program the test needs. On a
// developer machine without it the test skips loudly; in CI (CI set) it fails.
func requireBinary(t testing.TB, name string) string {
	t.Helper()
	return testsupport.RequireBinary(t, name)
}

// freePort returns a free loopback port from this package's range (see
// internal/freeport), never the same one twice.
func freePort(t testing.TB) int {
	t.Helper()
	p, err := freeport.Pick(20000, 28000)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startDemoApp runs `bgd demo-app` as a real process until the test ends.
func startDemoApp(t testing.TB, port int, color, release string, extra ...string) *exec.Cmd {
	t.Helper()
	args := append([]string{"demo-app", "--port", strconv.Itoa(port), "--color", color, "--release", release}, extra...)
	cmd := exec.Command(bgdBin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitListening(t, port, 5*time.Second)
	return cmd
}

// waitListening waits until something accepts TCP connections on the port.
func waitListening(t testing.TB, port int, within time.Duration) {
	t.Helper()
	if err := testsupport.WaitListening(port, within, nil); err != nil {
		t.Fatal(err)
	}
}

// bgd runs the bgd binary with args in dir, with env added to the test's
// environment, and returns stdout, stderr and the exit code.
func bgd(t testing.TB, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	r, err := testsupport.RunProcess(context.Background(), bgdBin, dir, append(os.Environ(), env...), args...)
	if err != nil {
		t.Fatalf("run bgd %v: %v", args, err)
	}
	return r.Stdout, r.Stderr, r.Code
}

func dialPort(port int) (net.Conn, error) {
	return net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
}
