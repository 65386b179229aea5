package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen is systemd's side: a datagram socket at name (a path, or @abstract
// as systemd names it in NOTIFY_SOCKET), set as NOTIFY_SOCKET for the test.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	if strings.HasPrefix(name, "@") {
		addr.Name = "\x00" + name[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

func received(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("nothing received: %v", err)
	}
	return string(buf[:n])
}

func TestReadySendsReadyToThePathSocket(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := received(t, conn); got != "READY=1" {
		t.Fatalf("systemd received %q, want READY=1", got)
	}
}

func TestReadySendsToAnAbstractSocket(t *testing.T) {
	conn := listen(t, fmt.Sprintf("@bgd-sdnotify-test-%d", os.Getpid()))
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := received(t, conn); got != "READY=1" {
		t.Fatalf("systemd received %q, want READY=1", got)
	}
}

func TestReadyOutsideSystemdDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Ready(); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
}

func TestReadyNamesABadSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if err := Ready(); err == nil || !strings.Contains(err.Error(), "relative/path") {
		t.Fatalf("a relative NOTIFY_SOCKET: %v, want an error naming it", err)
	}
	missing := filepath.Join(t.TempDir(), "gone")
	t.Setenv("NOTIFY_SOCKET", missing)
	if err := Ready(); err == nil || !strings.Contains(err.Error(), "sd_notify") {
		t.Fatalf("a socket nobody listens on: %v, want an sd_notify error", err)
	}
}
