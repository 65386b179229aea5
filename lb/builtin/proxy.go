package builtin

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/serve"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
	"github.com/fsnotify/fsnotify"
)

// RoutePath is the admin endpoint that names what the proxy serves.
const RoutePath = "/_bgd/route"

// RouteInfo is the answer of RoutePath.
type RouteInfo struct {
	Service    string       `json:"service"`
	Active     config.Color `json:"active"`
	Port       int          `json:"port"`
	Generation uint64       `json:"generation"`
	PID        int          `json:"pid"`
	// StateFile is the absolute path of the state file the proxy follows.
	StateFile string `json:"state_file"`
	// InFlight is the number of requests the proxy is forwarding to each
	// colour's slot now (a request counts for the colour it was routed
	// to, until its answer has been copied to the client). Always both
	// colours; nil only from a bgd proxy older than this field.
	InFlight map[config.Color]int64 `json:"in_flight,omitempty"`
	// Weights is present only while the proxy splits new requests between
	// the colours (a canary): both colours with their percentages, which
	// add up to 100. Absent: every new request goes to Active.
	Weights map[config.Color]int `json:"weights,omitempty"`
	// Sticky: the split in force keeps each client on one side with the
	// cookie lb.StickyCookie(Service). Never true without Weights.
	Sticky bool `json:"sticky,omitempty"`
	// Shadow is present only while the proxy copies each request to the
	// standby slot (shadow traffic), with what became of the copies.
	Shadow *ShadowInfo `json:"shadow,omitempty"`
	// Paused: the proxy holds new requests (bgd pause) until PausedUntil
	// at the latest; Held is how many it holds now.
	Paused      bool      `json:"paused,omitempty"`
	PausedUntil time.Time `json:"paused_until,omitzero"`
	Held        int64     `json:"held,omitempty"`
	// Maintenance: the proxy answers every request 503 (bgd maintenance on).
	Maintenance bool `json:"maintenance,omitempty"`
	// Admin is where the proxy serves its admin endpoints, this one
	// included: its AdminListen, or its Listen when they share it. ""
	// only from a bgd proxy older than admin_listen.
	Admin string `json:"admin,omitempty"`
}

// Proxy serves one service on Listen.
type Proxy struct {
	// Service names the service in metrics and pages.
	Service string
	// Listen is the address to serve on, e.g. "127.0.0.1:5004".
	Listen string
	// AdminListen is where the admin endpoints are served (admin.go):
	// "unix:<path>" (or an absolute path) for a unix socket of mode 0600,
	// or a host:port. "" or Listen: on Listen itself, where the admin paths
	// (/metrics, /monitoring, /_bgd/...) shadow the app's. Only loopback
	// clients are answered on TCP.
	AdminListen string
	// StatePath is the state file to follow.
	StatePath string
	// BluePort and GreenPort are used while the state file does not exist.
	BluePort, GreenPort int
	// UpstreamHost is where slots listen. Default "127.0.0.1".
	UpstreamHost string
	// Logger. Default: discard (`bgd proxy` passes its own).
	Logger *slog.Logger
	// Resync re-reads the state file this often even without an fsnotify
	// event (a safety net). Default 2s.
	Resync time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send a
	// request's headers (a slow-header client holds a connection no
	// longer). Default 30s.
	ReadHeaderTimeout time.Duration
	// Ready, when set, is called once the proxy listens (on Listen and
	// AdminListen) and follows the state file: from then on a connection
	// to either is served (`bgd proxy` tells systemd so, for a Type=notify
	// unit).
	Ready func()

	route   atomic.Pointer[upstream]
	mu      sync.Mutex // guards transports and snapshot
	trans   map[string]*slotTransport
	snap    *state.State
	metrics *metrics
	// adminMux routes the admin endpoints (admin.go), made once.
	adminMux  *http.ServeMux
	adminOnce sync.Once
	// inFlight counts the requests being forwarded, per colour
	// (colorIndex): two atomics, no lock on the request path.
	inFlight [2]atomic.Int64
	// shadow sends the copies of shadow traffic (shadow.go).
	shadow *shadower
	// gate is the pause in force (nil: none) and held the requests it
	// holds; maint the maintenance answer (nil: route). Atomics, so the
	// request path takes no lock when neither is on.
	gate  atomic.Pointer[gate]
	held  atomic.Int64
	maint atomic.Pointer[maintenance]
	// monitor is the /monitoring dashboard (monitoring.go).
	monitor *monitor
	// handedOff counts the connections the front end handed to net/http
	// (front.go).
	handedOff atomic.Int64
}

// colorIndex is color's slot in Proxy.inFlight.
func colorIndex(c config.Color) int {
	if c == config.Green {
		return 1
	}
	return 0
}

// side is one slot a generation routes to.
type side struct {
	color config.Color
	port  int
	pid   int
	proxy *httputil.ReverseProxy
	// trans carries the side's requests: proxy's transport, and the
	// fast path's (fastpath.go) connections.
	trans *slotTransport
	// cookie is the sticky cookie's name and setCookie the Set-Cookie
	// value that keeps a client on this side; both "" unless the
	// generation is a sticky split.
	cookie, setCookie string
}

// upstream is one generation of routing; requests hold on to the one they
// started with. The embedded side is the active colour.
type upstream struct {
	side
	generation uint64
	// canary is the standby side of a split, which gets weight percent
	// (1-99) of new requests; nil: no split, every request goes to the
	// active side.
	canary *side
	weight int
	// sticky: a split that keeps each client on one side with the cookie
	// lb.StickyCookie(Service).
	sticky bool
	// shadow is the standby side that gets a copy of each request (shadow
	// traffic); nil: no copies.
	shadow *side
	// preview is the standby slot, which serves preview requests
	// (preview.go); nil when the state has no port for it.
	preview *side
}

// same reports whether u and v route alike (same slots, processes, split
// and generation), so that a reload that finds v need not swap.
func (u *upstream) same(v *upstream) bool {
	if u.color != v.color || u.port != v.port || u.pid != v.pid || u.generation != v.generation ||
		u.weight != v.weight || u.sticky != v.sticky || (u.canary == nil) != (v.canary == nil) {
		return false
	}
	if !sameShadow(u, v) || !u.samePreview(v) {
		return false
	}
	return u.canary == nil || u.canary.color == v.canary.color && u.canary.port == v.canary.port && u.canary.pid == v.canary.pid
}

// sides are the slots u routes to: the active one, then the canary if any.
func (u *upstream) sides() []*side {
	if u.canary != nil {
		return []*side{&u.side, u.canary}
	}
	return []*side{&u.side}
}

// pick chooses the side that serves r (see choose).
func (u *upstream) pick(r *http.Request) *side {
	if u.canary == nil {
		return &u.side
	}
	var cookie config.Color
	if u.sticky {
		cookie = stickyColor(r.Header["Cookie"], u.cookie)
	}
	return u.choose(cookie)
}

// choose chooses the side that serves a request whose sticky cookie names
// cookie ("" for none). Without a split it is the active side. In a
// split, a sticky client whose cookie names one of the split's colours
// gets that colour; any other request goes to the canary with probability
// weight/100 (math/rand/v2's IntN is unbiased and lock-free) and to the
// active side otherwise. In a sticky split, the answer to a client
// without a valid cookie gets the cookie of the chosen side (side.setCookie).
func (u *upstream) choose(cookie config.Color) *side {
	if u.canary == nil {
		return &u.side
	}
	if u.sticky {
		switch cookie {
		case u.color:
			return &u.side
		case u.canary.color:
			return u.canary
		}
	}
	if rand.IntN(100) < u.weight {
		return u.canary
	}
	return &u.side
}

// stickyColor is the colour that the cookie name names in the Cookie
// header values lines, "" when there is no such cookie or none of them
// names blue or green (a value in double quotes counts without its
// quotes, as net/http reads it). It scans the values itself rather than
// parse every cookie into a value.
func stickyColor(lines []string, name string) config.Color {
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			switch c := config.Color(v); c {
			case config.Blue, config.Green:
				return c
			}
		}
	}
	return ""
}

// Run serves until ctx ends, then shuts down gracefully (in-flight requests
// finish, bounded by 10 s). It returns when the listener cannot be opened.
func (p *Proxy) Run(ctx context.Context) error {
	p.Logger = lb.OrDiscard(p.Logger)
	p.UpstreamHost = cmp.Or(p.UpstreamHost, "127.0.0.1")
	lb.SetDefault(&p.Resync, 2*time.Second)
	lb.SetDefault(&p.ReadHeaderTimeout, 30*time.Second)
	p.trans = map[string]*slotTransport{}
	p.metrics = newMetrics(p.Service, func(c config.Color) int64 { return p.inFlight[colorIndex(c)].Load() })
	p.startShadow(ctx)
	if err := p.reload(); err != nil {
		return err
	}
	l, err := p.openListeners()
	if err != nil {
		return err
	}
	watcher, err := p.watchState()
	if err != nil {
		l.close()
		return err
	}
	defer watcher.Close()
	p.Logger.Info("proxy serving", "service", p.Service, "listen", l.svc.Addr().String(), "admin", p.adminAddr(), "state", p.StatePath)
	p.startMonitoring(ctx)
	go p.follow(ctx, watcher)
	go p.releaseAll(ctx)
	if p.Ready != nil {
		p.Ready()
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: p.ReadHeaderTimeout, IdleTimeout: frontIdleTimeout}
	front := newFront(p, l.svc, srv)
	if l.admin == nil {
		return front.serve(ctx, 10*time.Second)
	}
	return p.serveWithAdmin(ctx, front, l)
}

// listeners are what the proxy serves on: the service's address and, when
// it has one, the admin address (adminTCP: a TCP one, for loopback
// clients only).
type listeners struct {
	svc, admin net.Listener
	adminTCP   bool
}

func (l listeners) close() {
	for _, ln := range []net.Listener{l.svc, l.admin} {
		if ln != nil {
			ln.Close()
		}
	}
}

// openListeners opens the admin listener, then the service's. The admin one
// opens first: once the service port answers, so does the admin address
// (a CLI that finds the port but not the admin address takes the proxy
// for an older one, and asks the port).
func (p *Proxy) openListeners() (listeners, error) {
	var l listeners
	var err error
	if l.admin, l.adminTCP, err = p.listenAdmin(); err != nil {
		return l, err
	}
	if l.svc, err = net.Listen("tcp", p.Listen); err != nil {
		l.close()
		return l, fmt.Errorf("proxy: listen on %s: %w", p.Listen, err)
	}
	return l, nil
}

// watchState watches the state file's directory: bgd replaces the file
// (a rename), which a watch of the file itself would lose.
func (p *Proxy) watchState() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("proxy: watch state: %w", err)
	}
	dir := filepath.Dir(p.StatePath)
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("proxy: watch %s: %w", dir, err)
	}
	return w, nil
}

// serveWithAdmin serves the service's requests and the admin API until
// ctx ends; both stop together: when one fails, the other is shut down.
func (p *Proxy) serveWithAdmin(ctx context.Context, f *front, l listeners) error {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	asrv := &http.Server{Handler: adminHandler{p: p, loopbackOnly: l.adminTCP}, ReadHeaderTimeout: p.ReadHeaderTimeout, IdleTimeout: 120 * time.Second}
	aerr := make(chan error, 1)
	go func() {
		err := serve.Until(sctx, asrv, l.admin, 10*time.Second)
		stop()
		aerr <- err
	}()
	err := f.serve(sctx, 10*time.Second)
	stop()
	if e := <-aerr; err == nil && !errors.Is(e, http.ErrServerClosed) {
		err = e
	}
	return err
}

// follow reloads the state on every change of the state file.
func (p *Proxy) follow(ctx context.Context, w *fsnotify.Watcher) {
	name := filepath.Clean(p.StatePath)
	tick := time.NewTicker(p.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) == name && ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Rename) != 0 {
				p.reloadLogged()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			p.Logger.Warn("proxy watch error", "err", err)
		case <-tick.C:
			p.reloadLogged()
		}
	}
}

func (p *Proxy) reloadLogged() {
	if err := p.reload(); err != nil {
		p.Logger.Error("proxy keeps its routing: state unreadable", "state", p.StatePath, "err", err)
	}
}

// reload reads the state file and swaps the upstream if it changed.
func (p *Proxy) reload() error {
	store := &state.Store{Path: p.StatePath, BluePort: p.BluePort, GreenPort: p.GreenPort}
	if p.route.Load() != nil && !store.Exists() {
		// A state file that disappears (deleted, or moved aside) says nothing
		// about where traffic should go: keep serving what we serve.
		return fmt.Errorf("state file %s is missing", p.StatePath)
	}
	st, err := store.Load()
	if err != nil {
		return err
	}
	next := p.upstreamOf(st)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.snap = st
	p.applyMaintenance(st)
	// Held requests are released after the new routing is stored, so a
	// resume written with a flip sends them to the new routing.
	defer p.applyPause(st)
	cur := p.route.Load()
	if cur != nil && cur.same(next) {
		return nil
	}
	for _, s := range next.sides() {
		s.proxy, s.trans = p.reverseProxy(*s)
	}
	if next.preview != nil {
		next.preview.proxy, next.preview.trans = p.reverseProxy(*next.preview)
	}
	p.route.Store(next)
	p.metrics.setRouting(next)
	if cur != nil {
		if cur.color != next.color {
			p.metrics.flips.Inc()
		}
		p.closeIdleLeft(cur, next)
	}
	p.logRoute(next)
	return nil
}

// upstreamOf is the routing a state asks for: its active slot, its canary
// split (with the sticky cookie), its shadow and its preview.
func (p *Proxy) upstreamOf(st *state.State) *upstream {
	slot := st.Slot(st.ActiveVersion)
	next := &upstream{side: side{color: st.ActiveVersion, port: slot.Port, pid: slot.PID}, generation: st.Generation}
	if c := st.Canary; c != nil && c.Color != st.ActiveVersion && c.Weight > 0 && c.Weight < 100 {
		cs := st.Slot(c.Color)
		next.canary = &side{color: c.Color, port: cs.Port, pid: cs.PID}
		next.weight, next.sticky = c.Weight, c.Sticky
		if c.Sticky {
			name := lb.StickyCookie(p.Service)
			for _, s := range next.sides() {
				s.cookie = name
				s.setCookie = (&http.Cookie{Name: name, Value: s.color.String(), Path: "/",
					HttpOnly: true, SameSite: http.SameSiteLaxMode}).String()
			}
		}
	}
	next.shadow = shadowSide(st)
	next.preview = previewSide(st)
	return next
}

// closeIdleLeft closes the idle connections to the slots cur sent to and
// next does not. They would only delay the slot's stop: a Go server's
// graceful Shutdown waits up to 5 s for a connection that was opened but
// never carried a request (the transport dials ahead under load).
// In-flight requests keep their connections, and a canary that stays in
// the split keeps its connections when the weights change. p.mu is held.
func (p *Proxy) closeIdleLeft(cur, next *upstream) {
	kept := map[string]bool{}
	for _, s := range next.sides() {
		kept[transportKey(s.port, s.pid)] = true
	}
	for _, s := range cur.sides() {
		if k := transportKey(s.port, s.pid); !kept[k] {
			if t := p.trans[k]; t != nil {
				t.CloseIdleConnections()
			}
		}
	}
}

// logRoute says where the proxy now sends requests.
func (p *Proxy) logRoute(next *upstream) {
	if next.shadow != nil {
		p.Logger.Info("proxy copies requests", "service", p.Service, "shadow", next.shadow.color, "shadow_port", next.shadow.port)
	}
	if next.canary != nil {
		p.Logger.Info("proxy routes", "service", p.Service, "slot", next.color, "port", next.port, "generation", next.generation,
			"canary", next.canary.color, "canary_port", next.canary.port, "canary_weight", next.weight, "sticky", next.sticky)
	} else {
		p.Logger.Info("proxy routes", "service", p.Service, "slot", next.color, "port", next.port, "generation", next.generation)
	}
}

// reverseProxy builds the proxy of one side. Transports are kept per
// (port, pid): when a slot is restarted, its idle connections to the old
// process are closed rather than reused.
func (p *Proxy) reverseProxy(u side) (*httputil.ReverseProxy, *slotTransport) {
	key := transportKey(u.port, u.pid)
	for k, t := range p.trans {
		if port, _, _ := strings.Cut(k, "/"); port == strconv.Itoa(u.port) && k != key {
			t.CloseIdleConnections()
			delete(p.trans, k)
		}
	}
	target := net.JoinHostPort(p.UpstreamHost, strconv.Itoa(u.port))
	t, ok := p.trans[key]
	if !ok {
		t = newSlotTransport(target)
		p.trans[key] = t
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = target
			// ReverseProxy has stripped the client's Forwarded and
			// X-Forwarded-* headers from r.Out. Keep the client's
			// X-Forwarded-For chain and append the client's address to it
			// (the stdlib's documented way, and what nginx's
			// $proxy_add_x_forwarded_for does); X-Forwarded-Host and -Proto
			// are set from the request itself. A chain the client marked
			// hop-by-hop (Connection: X-Forwarded-For) is not forwarded;
			// the client's address always is.
			if xff := r.In.Header["X-Forwarded-For"]; len(xff) > 0 && !connectionNames(r.In.Header, "X-Forwarded-For") {
				r.Out.Header["X-Forwarded-For"] = slices.Clone(xff)
			}
			r.SetXForwarded()
			r.Out.Host = r.In.Host
			// Only the proxy's copies say they are copies.
			r.Out.Header.Del(ShadowHeader)
		},
		Transport:  t,
		BufferPool: bufferPool{},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set("X-Bgd-Slot", u.color.String())
			// A sticky split keeps the client on the side that answered
			// it, unless its cookie already names a colour (the request
			// forwarded carries the client's cookies). Only answers of
			// the slot carry the cookie: the proxy's own 502 and 499 do
			// not, so a client is never pinned to a side that failed it,
			// and its next request draws again.
			if u.setCookie != "" && stickyColor(resp.Request.Header["Cookie"], u.cookie) == "" {
				resp.Header.Add("Set-Cookie", u.setCookie)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client hung up before the slot answered: not the
				// slot's failure. Counted as nginx's 499 (client closed
				// request), and not a warning, so that clients cannot fake
				// a failing slot in the metrics or flood the log.
				p.Logger.Debug("proxy client went away", "service", p.Service, "slot", u.color, "err", err)
				w.WriteHeader(statusClientClosed)
				return
			}
			p.Logger.Warn("proxy upstream error", "service", p.Service, "slot", u.color, "port", u.port, "err", err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}, t
}

// connectionNames reports whether the Connection header of h lists name,
// which makes that header hop-by-hop.
func connectionNames(h http.Header, name string) bool {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), name) {
				return true
			}
		}
	}
	return false
}

// statusClientClosed is nginx's non-standard "client closed request".
const statusClientClosed = 499

func transportKey(port, pid int) string { return strconv.Itoa(port) + "/" + strconv.Itoa(pid) }

// ServeHTTP proxies every request to the side of the routing that
// upstream.pick chooses; when the admin endpoints share Listen, it answers
// the admin paths itself (loopback clients only).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.adminShared() && isAdminPath(r.URL.Path) {
		p.serveAdmin(w, r, true)
		return
	}
	if r.URL.Path == RoutePath && r.Header[AdminProbeHeader] != nil && isLoopback(r.RemoteAddr) {
		p.serveAdminProbe(w)
		return
	}
	// Maintenance and a pause apply to previews too: a preview answers
	// what a client would get.
	if p.serveMaintenance(w, r) || !p.hold(w, r) {
		return
	}
	u := p.route.Load()
	s := u.previewed(r)
	if s == nil {
		s = u.pick(r)
	}
	cp := p.capture(u, s, r)
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	n := &p.inFlight[colorIndex(s.color)]
	n.Add(1)
	defer n.Add(-1)
	s.proxy.ServeHTTP(rec, r)
	p.metrics.observe(s.color, rec.code, time.Since(start))
	cp.send(rec.code)
}

// serveRoute answers RoutePath: what the proxy serves now.
func (p *Proxy) serveRoute(w http.ResponseWriter, r *http.Request) {
	u := p.route.Load()
	ri := RouteInfo{Service: p.Service, Active: u.color, Port: u.port, Generation: u.generation,
		PID: os.Getpid(), StateFile: absPath(p.StatePath), Admin: p.adminAddr(), InFlight: map[config.Color]int64{
			config.Blue: p.inFlight[colorIndex(config.Blue)].Load(), config.Green: p.inFlight[colorIndex(config.Green)].Load()}}
	if g := p.gate.Load(); g != nil {
		ri.Paused, ri.PausedUntil, ri.Held = true, g.until, p.held.Load()
	}
	ri.Maintenance = p.maint.Load() != nil
	if u.canary != nil {
		ri.Weights = map[config.Color]int{u.color: 100 - u.weight, u.canary.color: u.weight}
		ri.Sticky = u.sticky
	}
	ri.Shadow = p.shadowInfo(u)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ri)
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statusRecorder records the status for the metrics. It also keeps net/http
// from sniffing a Content-Type: an answer the slot sent without one reaches
// the client without one (a sniffed text/html would make a browser render
// bytes that the slot never called HTML).
type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	if code >= 200 {
		s.wroteHeader = true
		if h := s.Header(); h != nil {
			if _, ok := h["Content-Type"]; !ok {
				h["Content-Type"] = nil // nil: send none, do not sniff
			}
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (flushes).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// bufferPool recycles the 32 KiB copy buffers of the reverse proxy.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// errNotProxy: something answers on the proxy's address, but not a bgd proxy.
var errNotProxy = errors.New("not a bgd proxy")

// errOtherProxy: a bgd proxy answers on the address, but for another state file.
var errOtherProxy = errors.New("a bgd proxy of another state file")

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// slotTransport carries one slot's requests. A plain request (GET or HEAD,
// no body, no upgrade, no Expect) is sent on a kept connection and its
// answer read in the request's own goroutine: net/http's Transport hands
// each request to a writer and a reader goroutine per connection, two
// wake-ups per request that a proxy on a small host pays for in
// throughput and tail latency. Anything else goes through std, which
// handles request bodies, 100-continue, upgrades and their retries.
type slotTransport struct {
	std  *http.Transport
	addr string
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex
	idle []*keptConn
}

// keptConn is one connection to the slot, idle in slotTransport.idle or
// carrying one request.
type keptConn struct {
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

const (
	maxIdlePerSlot  = 256
	idleConnTimeout = 90 * time.Second
)

func newSlotTransport(addr string) *slotTransport {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &slotTransport{
		addr: addr,
		dial: dialer.DialContext,
		std: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			MaxIdleConns:        2 * maxIdlePerSlot,
			MaxIdleConnsPerHost: maxIdlePerSlot,
			IdleConnTimeout:     idleConnTimeout,
		},
	}
}

// CloseIdleConnections closes the idle connections of both paths.
func (t *slotTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
	t.std.CloseIdleConnections()
}

// plainRequest: a request the kept-connection path carries.
func plainRequest(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		(r.Body == nil || r.Body == http.NoBody) &&
		r.Header["Upgrade"] == nil && r.Header["Expect"] == nil && r.URL.Scheme == "http"
}

func (t *slotTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !plainRequest(r) {
		return t.std.RoundTrip(r)
	}
	for {
		c, reused, err := t.get(r.Context())
		if err != nil {
			return nil, err
		}
		resp, retry, err := t.roundTrip(c, r)
		if err == nil {
			return resp, nil
		}
		// A kept connection that the slot closed while it was idle fails
		// before any answer: GET and HEAD are sent again on a new one, as
		// net/http's Transport does.
		if !reused || !retry || r.Context().Err() != nil {
			return nil, err
		}
	}
}

// get takes an idle connection (reused) or dials a new one.
func (t *slotTransport) get(ctx context.Context) (c *keptConn, reused bool, err error) {
	t.mu.Lock()
	for len(t.idle) > 0 {
		c = t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if time.Since(c.idleAt) < idleConnTimeout {
			t.mu.Unlock()
			return c, true, nil
		}
		c.conn.Close()
	}
	t.mu.Unlock()
	conn, err := t.dial(ctx, "tcp", t.addr)
	if err != nil {
		return nil, false, err
	}
	return &keptConn{conn: conn, br: bufio.NewReaderSize(conn, 4<<10), bw: bufio.NewWriterSize(conn, 4<<10)}, false, nil
}

// put keeps c for the next request, or closes it when enough are kept.
func (t *slotTransport) put(c *keptConn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	if len(t.idle) < maxIdlePerSlot {
		t.idle = append(t.idle, c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.conn.Close()
}

// aLongTimeAgo is a deadline in the past: set on a connection, it makes
// its pending reads and writes fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip sends r on c and reads the answer's head; retry reports that
// the slot sent nothing at all (the request may be sent again). On error c
// is closed. The answer's body keeps c until it is read to its end (then
// c is kept) or closed before (then c is closed); until then the request's
// context still cuts the connection when the client goes away.
func (t *slotTransport) roundTrip(c *keptConn, r *http.Request) (resp *http.Response, retry bool, err error) {
	ctx := r.Context()
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		c.conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, retry, err
	}
	if err := r.Write(c.bw); err != nil {
		retry = true
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		retry = true
		return fail(err)
	}
	if _, err := c.br.Peek(1); err != nil {
		retry = true
		return fail(err)
	}
	for {
		resp, err = http.ReadResponse(c.br, r)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(errors.New("slot switched protocols without an upgrade request"))
		}
		// 1xx answers (103 Early Hints) go to the client as they come.
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	b := &keptBody{ReadCloser: resp.Body, t: t, c: c, stop: stop, keep: !r.Close && !resp.Close}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, false, nil
	}
	resp.Body = b
	return resp, false, nil
}

// keptBody is the body of an answer read from a keptConn.
type keptBody struct {
	io.ReadCloser
	t    *slotTransport
	c    *keptConn
	stop func() bool
	keep bool
	done bool
}

func (b *keptBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

// Close before the end closes the connection (the rest of the answer is
// not read: it may never end).
func (b *keptBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish releases the connection: kept when the answer was read to its
// end, the connection may be reused and the client's context did not
// cut it.
func (b *keptBody) finish(ended bool) {
	b.done = true
	if b.stop() && ended && b.keep {
		b.t.put(b.c)
		return
	}
	b.c.conn.Close()
}
