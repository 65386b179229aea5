//go:build !linux

package integration

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// netNamespace needs Linux network namespaces.
type netNamespace struct{ addr string }

func newNetNamespace(t *testing.T) *netNamespace {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal("network namespaces need Linux, and CI must not skip")
	}
	t.Skip("SKIP (loud): network namespaces need Linux; this test did not run")
	return nil
}

func (n *netNamespace) start(t *testing.T, argv ...string) *exec.Cmd { return nil }
func (n *netNamespace) dial(context.Context, string, string) (net.Conn, error) {
	return nil, nil
}
func (n *netNamespace) client() *http.Client                                 { return nil }
func (n *netNamespace) waitListening(*testing.T, string, int, time.Duration) {}
