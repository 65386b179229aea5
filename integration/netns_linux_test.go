package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netNamespace is a network namespace that a test made for itself with
// unshare(1) and ip(8): loopback up, and addr (not a loopback address) on an
// interface of its own, so that a connection from inside to addr comes from
// addr, a real non-loopback client. Nothing in it reaches the host's network,
// and nothing of the host's network is changed.
type netNamespace struct {
	path string // /proc/<holder>/ns/net
	addr string // the non-loopback address inside
}

// nsAddr is the namespace's non-loopback address. The namespace is private,
// so a fixed address collides with nothing.
const nsAddr = "10.213.47.1"

// newNetNamespace makes a namespace that lives until the test ends. Without
// unshare or ip, or without the right to make a namespace, the test skips
// loudly, and fails in CI (CI set).
func newNetNamespace(t *testing.T) *netNamespace {
	t.Helper()
	unshare := requireBinary(t, "unshare")
	ip := requireBinary(t, "ip")
	requireBinary(t, "nsenter")
	// A dummy interface where the kernel has the module, else a veth pair
	// (both ends inside).
	script := fmt.Sprintf(`set -e
%[1]s link set lo up
%[1]s link add d0 type dummy 2>/dev/null || %[1]s link add d0 type veth peer name d1
%[1]s addr add %[2]s/24 dev d0
%[1]s link set d0 up
%[1]s link set d1 up 2>/dev/null || true
echo ready
exec sleep 3600`, ip, nsAddr)
	holder := exec.Command(unshare, "--net", "--", "sh", "-c", script)
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	holder.Stderr = &stderr
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		holder.Process.Kill()
		holder.Wait()
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		holder.Process.Kill()
		holder.Wait()
		msg := fmt.Sprintf("cannot make a network namespace with a non-loopback address (root, CAP_SYS_ADMIN and CAP_NET_ADMIN needed): %s", strings.TrimSpace(stderr.String()))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip("SKIP (loud): " + msg)
	}
	return &netNamespace{path: fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid), addr: nsAddr}
}

// start runs argv inside the namespace (nsenter execs it: the pid is the
// program's) and kills it when the test ends.
func (n *netNamespace) start(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	nsenter := requireBinary(t, "nsenter")
	cmd := exec.Command(nsenter, append([]string{"--net=" + n.path, "--"}, argv...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// dial opens a TCP connection from inside the namespace: the socket is made
// on an OS thread that has entered the namespace, and belongs to it for its
// life. The thread goes back to the test's namespace afterwards (or, if it
// cannot, ends with its goroutine).
func (n *netNamespace) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer self.Close()
		target, err := os.Open(n.path)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("setns %s: %w", n.path, err)}
			return
		}
		c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
		if setns(self) == nil {
			runtime.UnlockOSThread()
		} // else: the locked thread exits with this goroutine
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// client is an HTTP client whose connections come from inside the namespace.
func (n *netNamespace) client() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: n.dial, DisableKeepAlives: true}}
}

// waitListening waits until something in the namespace accepts connections
// on host:port.
func (n *netNamespace) waitListening(t *testing.T, host string, port int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := n.dial(context.Background(), "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s:%d in the namespace after %s: %v", host, port, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
