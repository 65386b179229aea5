package testsupport

import (
	"fmt"
	"io"
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

	"github.com/bgd-dev/bgd/internal/freeport"
)

// Etcd fixtures of every test package take their two ports from this
// range, apart from the ranges internal/freeport gives the packages' own
// ports. Test binaries of different packages run at the same time and may
// pick the same port: StartEtcd then tries again with other ports.
const (
	etcdPortLo = 17000
	etcdPortHi = 20000
)

// Etcd is a real single-member etcd (Debian's etcd-server) on two loopback
// ports, its data in its own directory. Stop and Start end and run the
// same member again (same ports, same data), for tests of etcd restarts.
type Etcd struct {
	// Bin is the etcd program.
	Bin string
	// Dir holds the data directory (Dir/data) and the log (Dir/etcd.log).
	Dir string
	// Endpoint is the client URL, e.g. http://127.0.0.1:17123.
	Endpoint string
	// ClientPort and PeerPort are the loopback ports etcd listens on.
	ClientPort, PeerPort int

	// TLS, when set, makes etcd serve its clients over https only and
	// require a client certificate signed by TLS.CAFile.
	TLS *EtcdTLS

	mu   sync.Mutex
	proc *Proc
}

// EtcdTLS is the certificates of an etcd that serves https (WriteTestCerts
// makes a set).
type EtcdTLS struct {
	CAFile            string // signs the server's and the clients' certificates
	CertFile, KeyFile string // the server's, for 127.0.0.1
	ClientCertFile    string // a client certificate signed by CAFile
	ClientKeyFile     string
}

// StartEtcd runs etcd for the test and stops it in t.Cleanup. Without
// /usr/bin/etcd (Debian's etcd-server package) the test skips loudly on a
// developer machine and fails in CI.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := RequireBinary(t, "etcd")
	e, err := NewEtcd(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

// NewEtcd starts etcd with its data and log in dir. A port another process
// took between the pick and etcd's bind costs a retry with new ports.
func NewEtcd(bin, dir string) (*Etcd, error) { return newEtcd(bin, dir, nil) }

// StartEtcdTLS is StartEtcd with https and client certificates (tlsFiles).
func StartEtcdTLS(t testing.TB, tlsFiles *EtcdTLS) *Etcd {
	t.Helper()
	bin := RequireBinary(t, "etcd")
	e, err := newEtcd(bin, t.TempDir(), tlsFiles)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

func newEtcd(bin, dir string, tlsFiles *EtcdTLS) (*Etcd, error) {
	var err error
	for range 3 {
		e := &Etcd{Bin: bin, Dir: dir, TLS: tlsFiles}
		if e.ClientPort, err = freeport.Pick(etcdPortLo, etcdPortHi); err != nil {
			return nil, err
		}
		if e.PeerPort, err = freeport.Pick(etcdPortLo, etcdPortHi); err != nil {
			return nil, err
		}
		scheme := "http"
		if tlsFiles != nil {
			scheme = "https"
		}
		e.Endpoint = scheme + "://127.0.0.1:" + strconv.Itoa(e.ClientPort)
		if err = e.Start(); err == nil {
			return e, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
		// A fresh member on the new ports, and a log that tells only of it.
		os.RemoveAll(filepath.Join(dir, "data"))
		os.Remove(e.Log())
	}
	return nil, err
}

// Start runs etcd (again, after Stop: same ports, same data) and waits
// until it answers GET /health with a leader elected.
func (e *Etcd) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil && !e.proc.Exited() {
		return fmt.Errorf("etcd on %s runs already", e.Endpoint)
	}
	logf, err := os.OpenFile(e.Log(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	peer := "http://127.0.0.1:" + strconv.Itoa(e.PeerPort)
	args := []string{"--name", "bgd-test",
		"--data-dir", filepath.Join(e.Dir, "data"),
		"--listen-client-urls", e.Endpoint,
		"--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bgd-test=" + peer,
		"--initial-cluster-state", "new",
		// Short ticks: a restarted member elects itself sooner, and the
		// server's minimum lease TTL (1.5 election timeouts) stays below 1 s.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--logger", "zap", "--log-outputs", "stderr"}
	if t := e.TLS; t != nil {
		args = append(args, "--cert-file", t.CertFile, "--key-file", t.KeyFile, "--trusted-ca-file", t.CAFile, "--client-cert-auth")
	}
	cmd := exec.Command(e.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// etcd reads ETCD_* variables as flags: none of the caller's may leak in.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	client := &http.Client{Timeout: 500 * time.Millisecond}
	if e.TLS != nil {
		tc, err := e.TLS.ClientConfig()
		if err != nil {
			return err
		}
		client.Transport = &http.Transport{TLSClientConfig: tc}
	}
	p, err := StartReady("etcd", cmd, 15*time.Second, func(*Proc) bool { return e.healthy(client) })
	if err != nil {
		return fmt.Errorf("%w (%s, data in %s); its log:\n%s", err, e.Endpoint, e.Dir, tail(e.Output(), 30))
	}
	e.proc = p
	return nil
}

// healthy reports whether etcd answers GET /health with {"health":"true"}.
func (e *Etcd) healthy(client *http.Client) bool {
	resp, err := client.Get(e.Endpoint + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`)
}

// Stop ends etcd: SIGTERM, SIGKILL after 5 s. Safe to call when it is not
// running.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil {
		e.proc.Stop(syscall.SIGTERM, 5*time.Second)
		e.proc = nil
	}
}

// Proc is the running etcd (nil while stopped).
func (e *Etcd) Proc() *Proc {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proc
}

// Log is the file etcd's output goes to.
func (e *Etcd) Log() string { return filepath.Join(e.Dir, "etcd.log") }

// Output is what etcd printed.
func (e *Etcd) Output() string {
	data, _ := os.ReadFile(e.Log())
	return string(data)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
