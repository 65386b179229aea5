package haproxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/haproxy/admin"
	"github.com/bgd-dev/bgd/templates"
)

// Errors a Flip or Active can return besides lb.ErrUnreachable and
// lb.ErrNotConfirmed. In every case the routing is what it was before.
var (
	// ErrNoBackend: the target colour's backend is not in HAProxy's running
	// configuration (a map value naming it would silently fall to
	// default_backend).
	ErrNoBackend = errors.New("haproxy: backend missing")
	// ErrNoServerUp: HAProxy's own health checks never reported a server of
	// the target backend UP within Options.UpTimeout.
	ErrNoServerUp = errors.New("haproxy: no server UP")
	// ErrMapNotLoaded: HAProxy has not loaded lb.haproxy.map_file (no
	// frontend uses it, or it is named by another path).
	ErrMapNotLoaded = errors.New("haproxy: map file not loaded")
	// ErrNoEntry: the map has no entry for the service, so HAProxy routes it
	// to default_backend, not to a colour.
	ErrNoEntry = errors.New("haproxy: no map entry")
	// ErrMapFile: the map file on disk could not be read or rewritten, so a
	// reload would lose the flip; the runtime change was undone.
	ErrMapFile = errors.New("haproxy: map file not persisted")
	// ErrSticky: the split backend's cookie does not match the route: a
	// sticky split needs `cookie <lb.StickyCookie> insert` in HAProxy's
	// configuration (the runtime API cannot add it), and a split that is
	// not sticky must not have one.
	ErrSticky = errors.New("haproxy: split backend stickiness does not match")
	// ErrEvenSplit: the map names the split backend and its two servers
	// have the same weight, so HAProxy cannot tell which colour is the
	// stable one (Active).
	ErrEvenSplit = errors.New("haproxy: even split")
)

// Options tune a Balancer. The zero value gives every default.
type Options struct {
	// UpTimeout bounds the wait for HAProxy's own checks to report a server
	// of the target backend UP; they lag behind bgd's (rise × inter). The
	// orchestrator passes the service's health.timeout. Default 30s.
	UpTimeout time.Duration
	// PollInterval is the pause between two looks at `show stat` while
	// waiting for a server to be UP. Default 10ms (one command costs HAProxy ~0.3 ms).
	PollInterval time.Duration
	// CallTimeout bounds each runtime API command. Default 2s.
	CallTimeout time.Duration
	// Bind is what the rendered frontend binds. Default: lb.haproxy.listen
	// (":" + the port when it is a port alone), else ":80".
	Bind string
	// Check is appended to each rendered server's "check" keyword. Default
	// "inter 1s fastinter 100ms downinter 50ms rise 1 fall 3": bgd flips only
	// to a slot its own probes found healthy, so one passing HAProxy check
	// is enough, and a DOWN server (a slot being restarted) is checked every
	// 50 ms, so a flip waits about 25 ms for HAProxy instead of 0.5-1 s
	// ("rise 2", "downinter 500ms"). fall 3 keeps a live slot from being
	// marked DOWN by one slow answer.
	Check string
	// Sticky renders the split backend with the sticky cookie (`cookie
	// <lb.StickyCookie(service)> insert indirect nocache httponly`, and
	// `cookie blue` / `cookie green` on its servers) even when the rendered
	// route is not a sticky split: HAProxy reads the cookie only from its
	// configuration, so it must be there before a sticky canary starts. The
	// orchestrator passes the service's canary.sticky. A route that is a
	// sticky split renders it whatever Sticky says.
	Sticky bool
	// Template is the text of a snippet template; it receives Data.
	// Default: the file lb.haproxy.template names, else templates.HAProxy.
	Template string
	// Logger records each flip step. Default: discard.
	Logger *slog.Logger
	// MaintenancePage is the HTML file the snippet's maintenance rule
	// answers (`file`, read when HAProxy loads its configuration); "": the
	// rule answers lb.DefaultMaintenancePage. The orchestrator passes the
	// service's maintenance_page.
	MaintenancePage string
}

func (o *Options) fill() {
	lb.SetDefault(&o.UpTimeout, 30*time.Second)
	lb.SetDefault(&o.PollInterval, 10*time.Millisecond)
	lb.SetDefault(&o.CallTimeout, admin.DefaultTimeout)
	o.Bind = cmp.Or(o.Bind, ":80")
	o.Check = cmp.Or(o.Check, "inter 1s fastinter 100ms downinter 50ms rise 1 fall 3")
	o.Template = cmp.Or(o.Template, templates.HAProxy)
	o.Logger = lb.OrDiscard(o.Logger)
}

// Balancer flips one service through HAProxy's runtime API.
type Balancer struct {
	service  string
	cfg      config.HAProxy
	opts     Options
	client   *admin.Client
	tmpl     *template.Template
	backends map[config.Color]string // colour -> backend
	split    string                  // the backend of a canary: both colours' servers
}

// New returns the HAProxy driver of service. cfg is the service's
// lb.haproxy section with defaults filled (config.Load does that); it must
// pass config.HAProxy.Check, the rules config.Validate applies to it.
// cfg.Listen and cfg.Template (a file) apply where opts leaves Bind and
// Template empty. A template that does not parse or render is refused here.
func New(service string, cfg config.HAProxy, opts Options) (*Balancer, error) {
	if err := cfg.Check(service); err != nil {
		return nil, err
	}
	if opts.Bind == "" && cfg.Listen != "" {
		opts.Bind = cfg.Listen
		if !strings.Contains(cfg.Listen, ":") {
			opts.Bind = ":" + cfg.Listen // a port alone: every address
		}
	}
	name := "default HAProxy snippet template"
	if opts.Template == "" && cfg.Template != "" {
		data, err := os.ReadFile(cfg.Template)
		if err != nil {
			return nil, fmt.Errorf("%w: service %q: lb.haproxy.template: %v", config.ErrInvalid, service, err)
		}
		opts.Template, name = string(data), cfg.Template
	}
	opts.fill()
	tmpl, err := template.New(name).Option("missingkey=error").Parse(opts.Template)
	if err != nil {
		return nil, fmt.Errorf("%w: service %q: the HAProxy snippet template does not parse: %v", config.ErrInvalid, service, err)
	}
	client := admin.New(cfg.Socket)
	client.Timeout = opts.CallTimeout
	b := &Balancer{
		service: service, cfg: cfg, opts: opts, client: client, tmpl: tmpl,
		backends: map[config.Color]string{config.Blue: cfg.Backends[config.Blue], config.Green: cfg.Backends[config.Green]},
		split:    cmp.Or(cfg.SplitBackend, service+"_split"),
	}
	if _, err := b.Render(lb.SampleRoute(service)); err != nil {
		return nil, fmt.Errorf("%w: service %q: the HAProxy snippet template does not render: %v", config.ErrInvalid, service, err)
	}
	return b, nil
}

var _ lb.Capable = (*Balancer)(nil)

// Capabilities: today's routes, weighted splits and maintenance, with
// slots on any host. A flip switches the map entry between the two colours'
// backends, whose servers are the addresses the snippet (Render) wrote, a
// remote Host included; a split points the entry at the split backend (both
// colours' servers) after setting its servers' weights; maintenance sets
// the map entry "<service>@maintenance" that the snippet's frontend reads
// (maintenance.go). A pause is refused: HAProxy's runtime API has no way
// to hold requests and release them on demand (see the package doc).
func (b *Balancer) Capabilities() lb.Capabilities {
	return lb.Capabilities{Driver: "haproxy", Weights: true, RemoteHosts: true, Maintenance: true}
}

// Flip routes r (flipRoute), then turns maintenance on or off as r says
// (setMaintenance) and points the preview entry at the standby
// (setPreview, preview.go). A maintenance page HAProxy cannot answer is
// refused before anything changes. A preview entry that cannot be set
// leaves the flip standing: it is logged, and the next smoke check, which
// needs it, fails saying so.
func (b *Balancer) Flip(ctx context.Context, r lb.Route) error {
	if err := b.checkPage(r); err != nil {
		return err
	}
	if err := b.flipRoute(ctx, r); err != nil {
		return err
	}
	if err := b.setMaintenance(ctx, r.Maintenance); err != nil {
		return err
	}
	if err := b.setPreview(ctx, r); err != nil {
		b.opts.Logger.Warn("haproxy: the preview entry still names the previous standby", "service", b.service, "err", err)
	}
	return nil
}

// flipRoute routes the service to r.Active's backend: check the backend exists,
// wait until HAProxy's checks see a server of it UP, `set map` (or `add
// map`), confirm with `get map`, then rewrite the map file so a reload keeps
// it. On any error the previous map value is in force.
func (b *Balancer) flipRoute(ctx context.Context, r lb.Route) error {
	start := time.Now()
	color := r.Active.Color
	target, ok := b.backends[color]
	if !ok {
		return fmt.Errorf("haproxy: cannot route %s to %q: not blue or green", b.service, color)
	}
	if err := b.Capabilities().Check(r); err != nil {
		return err
	}
	if r.Splits() {
		return b.flipSplit(ctx, r)
	}
	log := b.opts.Logger.With("service", b.service, "slot", color, "backend", target)

	if err := b.checkBackend(ctx, color, target); err != nil {
		return err
	}
	prev, err := b.lookup(ctx)
	if err != nil {
		return err
	}
	if prev.Found && prev.Value == target {
		// Already routed there (e.g. `bgd start` of the active colour):
		// return only once HAProxy's checks see the slot UP, so nothing
		// answers 503 after bgd said it was running, and the file agrees.
		if err := b.waitUp(ctx, target, color); err != nil {
			return err
		}
		if err := b.persist(ctx, target); err != nil {
			return fmt.Errorf("%w: %s already routes to %s but %v", ErrMapFile, b.service, target, err)
		}
		log.Info("haproxy already routes to slot", "elapsed", time.Since(start))
		return nil
	}
	if err := b.checkMapFile(target); err != nil {
		return err
	}
	if err := b.waitUp(ctx, target, color); err != nil {
		return err
	}
	if err := b.switchEntry(ctx, prev, target); err != nil {
		return err
	}
	log.Info("haproxy flipped", "previous", prev.Value, "elapsed", time.Since(start))
	return nil
}

// checkBackend refuses a target backend HAProxy does not run: a map value
// naming a missing backend would silently fall to default_backend.
func (b *Balancer) checkBackend(ctx context.Context, color config.Color, target string) error {
	backends, err := b.client.ShowBackends(ctx)
	if err != nil {
		return b.wrap(err, "list backends")
	}
	if !slices.Contains(backends, target) {
		return fmt.Errorf("%w: cannot route %s to %s: backend %q is not in HAProxy's running configuration (it has: %s); add it (`bgd render` prints it) and reload HAProxy",
			ErrNoBackend, b.service, color, target, strings.Join(backends, ", "))
	}
	return nil
}

// switchEntry sets the service's map entry to target, reads it back from
// HAProxy and rewrites the map file; on any failure the previous entry is
// put back, and the error says whether that worked.
func (b *Balancer) switchEntry(ctx context.Context, prev admin.MapLookup, target string) error {
	if err := b.setEntry(ctx, prev.Found, target); err != nil {
		var ce *admin.CommandError
		if !errors.As(err, &ce) {
			// The command may have been applied before the connection
			// failed: put the previous entry back, which is harmless if not.
			if rerr := b.restore(ctx, prev); rerr != nil {
				return fmt.Errorf("%w; restoring the previous entry failed too: %v (check `get map %s %s`)",
					b.wrap(err, "set the map entry"), rerr, b.cfg.MapFile, b.service)
			}
		}
		return b.wrap(err, "set the map entry")
	}
	got, err := b.lookup(ctx)
	if err != nil || !got.Found || got.Value != target {
		cause := err
		if cause == nil {
			cause = fmt.Errorf("get map answers %+v", got)
		}
		if rerr := b.restore(ctx, prev); rerr != nil {
			return fmt.Errorf("%w: %s to %s: %v; restoring the previous entry failed too: %v (check `get map %s %s`)",
				lb.ErrNotConfirmed, b.service, target, cause, rerr, b.cfg.MapFile, b.service)
		}
		return fmt.Errorf("%w: %s to %s: %v; the previous entry was restored", lb.ErrNotConfirmed, b.service, target, cause)
	}
	if err := b.persist(ctx, target); err != nil {
		if rerr := b.restore(ctx, prev); rerr != nil {
			return fmt.Errorf("%w: %v; HAProxy now routes %s to %s and restoring the previous entry failed: %v",
				ErrMapFile, err, b.service, target, rerr)
		}
		return fmt.Errorf("%w: %v; the runtime change was undone, so HAProxy still routes as before", ErrMapFile, err)
	}
	return nil
}

// lookup reads the service's map entry, turning "unknown map" into a
// clear ErrMapNotLoaded naming the maps HAProxy did load.
func (b *Balancer) lookup(ctx context.Context) (admin.MapLookup, error) {
	m, err := b.client.GetMap(ctx, b.cfg.MapFile, b.service)
	if errors.Is(err, admin.ErrUnknownMap) {
		loaded := "none"
		if maps, lerr := b.client.ShowMaps(ctx); lerr == nil && len(maps) > 0 {
			names := make([]string, len(maps))
			for i, m := range maps {
				names[i] = m.File
			}
			loaded = strings.Join(names, ", ")
		}
		return m, fmt.Errorf("%w: HAProxy has not loaded %s (it has: %s): its frontend needs `use_backend %%[str(%s),map(%s)]` with exactly this path (see `bgd render`), then a reload",
			ErrMapNotLoaded, b.cfg.MapFile, loaded, b.service, b.cfg.MapFile)
	}
	if err != nil {
		return m, b.wrap(err, "read the map entry")
	}
	return m, nil
}

// setEntry sets the entry, adding it when the service has none; a key that
// vanished between lookup and set is added.
func (b *Balancer) setEntry(ctx context.Context, exists bool, value string) error {
	if exists {
		err := b.client.SetMap(ctx, b.cfg.MapFile, b.service, value)
		if !errors.Is(err, admin.ErrEntryNotFound) {
			return err
		}
	}
	return b.client.AddMap(ctx, b.cfg.MapFile, b.service, value)
}

// restore puts the previous entry back (or removes the one added). It uses
// its own deadline: the flip's context may be what ran out.
func (b *Balancer) restore(ctx context.Context, prev admin.MapLookup) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.opts.CallTimeout)
	defer cancel()
	if !prev.Found {
		err := b.client.DelMap(ctx, b.cfg.MapFile, b.service)
		if errors.Is(err, admin.ErrEntryNotFound) {
			return nil
		}
		return err
	}
	return b.setEntry(ctx, true, prev.Value)
}

// waitUp polls `show stat` until a server of backend is UP by HAProxy's own
// checks, for at most Options.UpTimeout. The bound applies between polls,
// so a failing socket is reported as itself, never as a timeout.
func (b *Balancer) waitUp(ctx context.Context, backend string, color config.Color) error {
	deadline := time.Now().Add(b.opts.UpTimeout)
	for {
		rows, err := b.client.ShowStat(ctx, backend)
		if err != nil {
			return b.wrap(err, "read server states")
		}
		var states []string
		for _, s := range rows {
			if s.Proxy != backend || !s.IsServer() {
				continue
			}
			if s.Up() {
				return nil
			}
			st := s.Name + " " + s.Status
			if s.CheckDesc != "" {
				st += " (" + s.CheckDesc + ")"
			}
			states = append(states, st)
		}
		if time.Now().After(deadline) {
			if len(states) == 0 {
				states = []string{"no servers"}
			}
			return fmt.Errorf("%w: cannot route %s to %s: no server of backend %q is UP in HAProxy after %s (%s)",
				ErrNoServerUp, b.service, color, backend, b.opts.UpTimeout, strings.Join(states, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("haproxy: waiting for a server of backend %q to be UP: %w", backend, ctx.Err())
		case <-time.After(min(b.opts.PollInterval, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// wrap says what failed; an unreachable socket also becomes lb.ErrUnreachable.
func (b *Balancer) wrap(err error, doing string) error {
	if errors.Is(err, admin.ErrUnreachable) {
		return fmt.Errorf("%w: cannot %s for %s: %w; is HAProxy running with `stats socket %s` in its global section?",
			lb.ErrUnreachable, doing, b.service, err, b.cfg.Socket)
	}
	if errors.Is(err, admin.ErrUnknownCommand) {
		return fmt.Errorf("haproxy: cannot %s for %s: %w; is %s the master CLI? bgd needs a worker's `stats socket`",
			doing, b.service, err, b.cfg.Socket)
	}
	return fmt.Errorf("haproxy: cannot %s for %s: %w", doing, b.service, err)
}

var _ lb.Drainer = (*Balancer)(nil)

// InFlight is what HAProxy has in flight to u's colour's backend, from `show
// stat`: the current sessions (scur) of its servers plus the requests
// queued on them and on the backend itself (qcur), plus scur and qcur of
// the split backend's server of that colour (what a canary sent it). In HTTP mode a session
// is attached to a server only while one request is being served (an idle
// keep-alive connection to the server does not count), so this is the
// number of requests HAProxy is still waiting on that slot for.
func (b *Balancer) InFlight(ctx context.Context, u lb.Upstream) (int, error) {
	color := u.Color
	backend, ok := b.backends[color]
	if !ok {
		return 0, fmt.Errorf("haproxy: service %s has no backend for colour %q", b.service, color)
	}
	rows, err := b.client.ShowStat(ctx, "")
	if err != nil {
		return 0, b.wrap(err, "read the in-flight requests")
	}
	n, seen := 0, false
	for _, s := range rows {
		var fields []string
		switch {
		case s.Proxy == b.split && s.IsServer() && s.Name == color.String():
			fields = []string{"scur", "qcur"}
		case s.Proxy != backend:
			continue
		case s.IsServer():
			fields = []string{"scur", "qcur"}
		case s.Type == admin.StatBackend:
			fields = []string{"qcur"} // requests not yet given to a server
		default:
			continue
		}
		seen = seen || s.Proxy == backend
		for _, f := range fields {
			v, err := strconv.Atoi(s.Fields[f])
			if err != nil {
				return 0, fmt.Errorf("haproxy: show stat: %s/%s has %s %q, not a number", s.Proxy, s.Name, f, s.Fields[f])
			}
			n += v
		}
	}
	if !seen {
		return 0, fmt.Errorf("%w: HAProxy has no backend %q (service %s, %s)", ErrNoBackend, backend, b.service, color)
	}
	return n, nil
}

// Active reads the map entry back from HAProxy and names its colour. While
// the entry names the split backend (a canary), the active colour is the
// one whose server there has the larger weight: a split gives the stable
// colour 100 - w and the canary w, w < 50 for any canary but an even one,
// which is ErrEvenSplit (HAProxy holds nothing else that tells them apart).
func (b *Balancer) Active(ctx context.Context) (config.Color, error) {
	m, err := b.lookup(ctx)
	if err != nil {
		return "", err
	}
	if !m.Found {
		return "", fmt.Errorf("%w: %s has no entry for %s, so HAProxy sends it to default_backend", ErrNoEntry, b.cfg.MapFile, b.service)
	}
	for _, c := range config.Colors {
		if b.backends[c] == m.Value {
			return c, nil
		}
	}
	if m.Value == b.split {
		return b.activeOfSplit(ctx)
	}
	return "", fmt.Errorf("haproxy: %s routes %s to backend %q, which is neither blue (%s), green (%s) nor the split backend (%s)",
		b.cfg.MapFile, b.service, m.Value, b.backends[config.Blue], b.backends[config.Green], b.split)
}

// Backend is one colour's backend, as the snippet template sees it.
type Backend struct {
	Color  string // "blue" or "green"; a plain string (template data), not config.Color
	Name   string // the HAProxy backend, lb.haproxy.backends.<colour>
	Addr   string // the slot, "127.0.0.1:5005"
	Active bool   // the backend r routes to
}

// SplitServer is one colour's server in the split backend.
type SplitServer struct {
	Color  string // "blue" or "green": the server's name, and its cookie value
	Addr   string // the slot, "127.0.0.1:5005"
	Weight int    // the configuration's weight: the route's percentage when it splits, else 100 for the active colour and 0 for the other
}

// Split is the split backend, as the snippet template sees it.
type Split struct {
	Name    string        // lb.haproxy.split_backend, default <service>_split
	Cookie  string        // the sticky cookie's name, lb.StickyCookie(service)
	Sticky  bool          // print the cookie lines (Options.Sticky, or a sticky split route)
	Servers []SplitServer // blue, then green
}

// Data is what the snippet template receives; see the package doc.
type Data struct {
	Service      string
	MapFile      string
	Socket       string // as a stats socket line wants it: a path, or ipv4@host:port
	SocketIsUnix bool
	Bind         string
	HealthPath   string
	Check        string
	Backends     []Backend // blue, then green
	Active       Backend
	Split        Split
	Generation   uint64
	// Maintenance is the frontend's maintenance rule.
	Maintenance Maintenance
}

// Render returns the snippet a user includes in HAProxy's configuration
// for route r. It does not touch HAProxy.
func (b *Balancer) Render(r lb.Route) ([]byte, error) {
	if !r.Active.Color.Valid() {
		return nil, fmt.Errorf("haproxy: render %s: active colour %q is not blue or green", b.service, r.Active.Color)
	}
	d := Data{
		Service: b.service, MapFile: b.cfg.MapFile, Bind: b.opts.Bind,
		HealthPath: r.HealthPath, Check: b.opts.Check, Generation: r.Generation,
	}
	if d.HealthPath == "" {
		d.HealthPath = "/health"
	}
	d.Socket, d.SocketIsUnix = strings.TrimPrefix(b.cfg.Socket, "unix://"), true
	if rest, ok := strings.CutPrefix(b.cfg.Socket, "tcp://"); ok {
		d.Socket, d.SocketIsUnix = "ipv4@"+rest, false
		if strings.HasPrefix(rest, "[") {
			d.Socket = "ipv6@" + rest
		}
	}
	for _, c := range config.Colors {
		u := r.Active
		if c != r.Active.Color {
			u = r.Standby
		}
		if u.Color != c || u.Port == 0 {
			return nil, fmt.Errorf("haproxy: render %s: the route has no port for the %s slot", b.service, c)
		}
		be := Backend{Color: c.String(), Name: b.backends[c], Addr: u.Addr(), Active: r.Active.Color == c}
		d.Backends = append(d.Backends, be)
		if be.Active {
			d.Active = be
		}
		w := u.Weight
		if !r.Splits() {
			w = map[bool]int{true: 100, false: 0}[be.Active]
		}
		d.Split.Servers = append(d.Split.Servers, SplitServer{Color: c.String(), Addr: u.Addr(), Weight: w})
	}
	d.Split.Name, d.Split.Cookie = b.split, lb.StickyCookie(b.service)
	d.Split.Sticky = b.opts.Sticky || (r.Splits() && r.Sticky)
	d.Maintenance = b.maintenanceData(r)
	if err := b.Capabilities().Check(r); err != nil {
		return nil, err
	}
	if err := b.checkPage(r); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := b.tmpl.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("haproxy: render %s: %w", b.service, err)
	}
	return buf.Bytes(), nil
}
