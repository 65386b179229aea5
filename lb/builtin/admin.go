package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// The admin endpoints. On a proxy whose AdminListen is its own listener
// (the embedded default), they shadow the app's paths of the same names.
const (
	MetricsPath    = "/metrics"
	MonitoringPath = "/monitoring"
	// AdminPrefix: every path under it is the proxy's, never the app's.
	AdminPrefix = "/_bgd/"
)

// isAdminPath reports whether path is one of the admin endpoints, which
// the proxy answers itself when they share its listener.
func isAdminPath(path string) bool {
	return path == MetricsPath || path == MonitoringPath || strings.HasPrefix(path, AdminPrefix)
}

// adminShared reports whether the admin endpoints are served on Listen
// (AdminListen empty or Listen itself).
func (p *Proxy) adminShared() bool {
	return p.AdminListen == "" || p.AdminListen == p.Listen
}

// adminAddr is where the admin endpoints are served.
func (p *Proxy) adminAddr() string {
	if p.adminShared() {
		return p.Listen
	}
	return p.AdminListen
}

// newAdminMux routes the admin endpoints.
func (p *Proxy) newAdminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc(MetricsPath, func(w http.ResponseWriter, r *http.Request) { p.metrics.handler.ServeHTTP(w, r) })
	mux.HandleFunc(MonitoringPath, p.serveMonitoring)
	mux.HandleFunc(RoutePath, p.serveRoute)
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "bgd proxy of service %s: admin endpoints %s, %s, %s\n", p.Service, MetricsPath, MonitoringPath, RoutePath)
	})
	return mux
}

// serveAdmin answers an admin request. loopbackOnly (TCP listeners) refuses
// every client whose connection does not come from a loopback address;
// on a unix socket the socket's mode (0600) decides who may connect.
func (p *Proxy) serveAdmin(w http.ResponseWriter, r *http.Request, loopbackOnly bool) {
	if loopbackOnly && !isLoopback(r.RemoteAddr) {
		http.Error(w, "forbidden: only loopback clients may read "+r.URL.Path, http.StatusForbidden)
		return
	}
	p.adminOnce.Do(func() { p.adminMux = p.newAdminMux() })
	p.adminMux.ServeHTTP(w, r)
}

// adminHandler serves a dedicated admin listener.
type adminHandler struct {
	p            *Proxy
	loopbackOnly bool
}

func (h adminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.p.serveAdmin(w, r, h.loopbackOnly)
}

// listenAdmin opens the admin listener when AdminListen is not Listen:
// a unix socket (mode 0600; a stale socket left by a proxy that died is
// replaced, a live one is an error) or a TCP address. nil when the admin
// endpoints share Listen.
func (p *Proxy) listenAdmin() (net.Listener, bool, error) {
	if p.adminShared() {
		return nil, false, nil
	}
	path, ok := config.AdminSocket(p.AdminListen)
	if !ok {
		ln, err := net.Listen("tcp", p.AdminListen)
		if err != nil {
			return nil, false, fmt.Errorf("proxy: admin listener (lb.builtin.admin_listen) on %s: %w", p.AdminListen, err)
		}
		return ln, true, nil
	}
	ln, err := listenUnix(path)
	if err != nil {
		return nil, false, fmt.Errorf("proxy: admin socket (lb.builtin.admin_listen) %s: %w", path, err)
	}
	return ln, false, nil
}

// listenUnix listens on the unix socket path, mode 0600.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("it exists and is not a socket (%s): remove it or choose another path", fi.Mode().Type())
		}
		c, err := dialUnix(context.Background(), path)
		if err == nil {
			c.Close()
			return nil, errors.New("another process serves it (is a bgd proxy of this service already running?)")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("cannot tell whether it is in use: %w", err)
		}
		// Left by a proxy that did not close it (killed): nobody listens.
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	var ln *net.UnixListener
	err := withShortPath(path, func(short string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: short, Net: "unix"})
		return err
	})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("its directory %s does not exist: %w", filepath.Dir(path), err)
		}
		return nil, err
	}
	// The short path (/proc/self/fd/...) means nothing once the directory
	// is closed: the listener removes the real one.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	return &unlinkListener{UnixListener: ln, path: path}, nil
}

// unlinkListener removes its socket file when closed.
type unlinkListener struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (l *unlinkListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() { os.Remove(l.path) })
	return err
}

// maxSocketPath is the longest path a unix socket address holds on Linux
// (sun_path is 108 bytes, with its NUL).
const maxSocketPath = 107

// withShortPath calls f with path, or, when path is too long for a unix
// socket address, with the same file reached through its open directory
// (/proc/self/fd/N/name): a state directory deep in the tree still gets
// its admin socket.
func withShortPath(path string, f func(string) error) error {
	if len(path) <= maxSocketPath {
		return f(path)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	short := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	if len(short) > maxSocketPath {
		return fmt.Errorf("the socket's name %q is too long for a unix socket: choose a shorter lb.builtin.admin_listen", filepath.Base(path))
	}
	return f(short)
}

// dialUnix connects to the unix socket path.
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var c net.Conn
	err := withShortPath(path, func(short string) error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "unix", short)
		return err
	})
	return c, err
}

// adminClients are the clients of admin unix sockets, by path.
var adminClients sync.Map

// AdminClient is an HTTP client that reaches the admin endpoints of a
// proxy on admin (its AdminListen: "unix:<path>", a path, or host:port),
// with a 1 s timeout, and the base URL of its requests: base+"/metrics" is
// the proxy's /metrics. Clients are shared, one per socket.
func AdminClient(admin string) (client *http.Client, base string) {
	path, ok := config.AdminSocket(admin)
	if !ok {
		return adminClient, "http://" + admin
	}
	if c, ok := adminClients.Load(path); ok {
		return c.(*http.Client), "http://bgd-admin"
	}
	c, _ := adminClients.LoadOrStore(path, &http.Client{Timeout: time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dialUnix(ctx, path) },
	}})
	return c.(*http.Client), "http://bgd-admin"
}

// client is the HTTP client that reaches the proxy's admin endpoints, and
// the base URL of its requests.
func (b *Balancer) client() (*http.Client, string) {
	c, base := AdminClient(b.adminAddr())
	if _, unix := config.AdminSocket(b.adminAddr()); !unix && b.Client != nil {
		c = b.Client
	}
	return c, base
}

// adminAddr is where the proxy serves its admin endpoints.
func (b *Balancer) adminAddr() string {
	if b.Admin == "" {
		return b.Listen
	}
	return b.Admin
}

// adminShared reports whether the admin endpoints share the service port.
func (b *Balancer) adminShared() bool { return b.Admin == "" || b.Admin == b.Listen }

// describeAdmin names where the proxy is asked, for errors: the service
// port, or the admin address and the service port.
func (b *Balancer) describeAdmin() string {
	if b.adminShared() {
		return b.Listen
	}
	return fmt.Sprintf("%s (admin of the proxy on %s)", b.adminAddr(), b.Listen)
}

// get asks the proxy's admin endpoint path.
func (b *Balancer) get(ctx context.Context, path string) (*http.Response, error) {
	client, base := b.client()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

// errOldProxy: a bgd proxy answers its admin endpoints on the service port,
// not on the admin address this bgd expects: it is older than admin_listen.
var errOldProxy = errors.New("a bgd proxy older than lb.builtin.admin_listen")

// AdminProbeHeader marks a request for RoutePath on the service port that
// asks where the proxy serves its admin endpoints: a proxy whose admin
// endpoints are elsewhere answers it itself, from loopback clients
// (RouteInfo with Service, PID, StateFile and Admin only), rather than
// forward it to the app. A proxy older than admin_listen answers its full
// RouteInfo, without Admin.
const AdminProbeHeader = "X-Bgd-Admin-Probe"

func (p *Proxy) serveAdminProbe(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(RouteInfo{Service: p.Service, PID: os.Getpid(), StateFile: absPath(p.StatePath), Admin: p.adminAddr()})
}

// oldProxy asks the service port which proxy holds it, when nothing answers
// on the admin address: a proxy from an older bgd (admin endpoints on the
// service port), or one whose admin address differs from this config's. It
// returns the error that says what to do, or nil (none of them).
func (b *Balancer) oldProxy(ctx context.Context) error {
	if b.adminShared() {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.Listen+RoutePath, nil)
	if err != nil {
		return nil
	}
	req.Header.Set(AdminProbeHeader, "1")
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var ri RouteInfo
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ri) != nil || ri.PID == 0 {
		// Something holds the service port, and no bgd proxy answers
		// there: starting one would fail.
		return fmt.Errorf("%w: nothing answers on %s, and the service port %s answers, but %w (status %d)%s",
			lb.ErrUnreachable, b.adminAddr(), b.Listen, errNotProxy, resp.StatusCode, holderOf(b.Listen))
	}
	restart := fmt.Sprintf("restart it (stop pid %d, then bgd start or bgd health-check starts a new one; under systemd, restart its unit)", ri.PID)
	switch {
	case ri.Admin == "" && ri.Active != "":
		return fmt.Errorf("%w: the builtin proxy on %s (pid %d) is %w: it serves its admin endpoints on the service port, and nothing answers on %s; %s",
			lb.ErrUnreachable, b.Listen, ri.PID, errOldProxy, b.adminAddr(), restart)
	case b.StatePath != "" && ri.StateFile != "" && ri.StateFile != absPath(b.StatePath):
		return fmt.Errorf("%w: %s is served by %w (pid %d) that follows %s, not %s: stop it (kill %d), or give this service another lb.builtin.listen (BG_PROXY_PORT)",
			lb.ErrUnreachable, b.Listen, errOtherProxy, ri.PID, ri.StateFile, absPath(b.StatePath), ri.PID)
	case ri.Admin != "" && !sameAdmin(ri.Admin, b.adminAddr()):
		return fmt.Errorf("%w: the builtin proxy on %s (pid %d) %w: on %s, not on %s (lb.builtin.admin_listen); it was started with another configuration: %s with this one",
			lb.ErrUnreachable, b.Listen, ri.PID, errAdminElsewhere, ri.Admin, b.adminAddr(), restart)
	case ri.Admin != "":
		return fmt.Errorf("%w: the builtin proxy on %s (pid %d) serves its admin endpoints on %s, which does not answer (was the socket removed?); %s",
			lb.ErrUnreachable, b.Listen, ri.PID, ri.Admin, restart)
	}
	return nil
}

// errAdminElsewhere: the proxy on the service port serves its admin
// endpoints elsewhere than this config says.
var errAdminElsewhere = errors.New("serves its admin endpoints elsewhere")

// sameAdmin reports whether two admin addresses are one: the same socket
// file (relative paths from the working directory), or the same string.
func sameAdmin(a, b string) bool {
	pa, oka := config.AdminSocket(a)
	pb, okb := config.AdminSocket(b)
	if !oka || !okb {
		return a == b
	}
	return absPath(pa) == absPath(pb)
}

// decodeRoute reads a RouteInfo answer: an error unless it is one.
func decodeRoute(resp *http.Response) (*RouteInfo, error) {
	var ri RouteInfo
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &ri) != nil || ri.Active == "" {
		return nil, errNotProxy
	}
	return &ri, nil
}
