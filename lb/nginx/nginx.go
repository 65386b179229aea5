package nginx

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/fsx"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/templates"
)

// Response headers the default template sets. The driver reads back the
// generation (to confirm a flip) and the route's active colour: ActiveHeader
// when the answer has it (a split), else SlotHeader.
const (
	GenerationHeader = "X-Bgd-Generation"
	// SlotHeader names the colour that served the answer: the active one,
	// or during a split the one nginx picked for that request.
	SlotHeader = "X-Bgd-Slot"
	// ActiveHeader names the route's active (stable) colour during a split,
	// whichever colour served the answer.
	ActiveHeader = "X-Bgd-Active"
	// WeightsHeader gives a split's weights, e.g. "blue=90,green=10".
	WeightsHeader = "X-Bgd-Weights"
)

// ErrRejected: the test command (nginx -t) refused the rendered file. The
// previous file was restored and nothing was reloaded.
var ErrRejected = errors.New("nginx rejected the configuration")

// Options tune a Balancer. The zero value gives every default.
type Options struct {
	// VerifyTimeout bounds the wait, after a reload, for verify_url to answer
	// with the new generation. Default 5s.
	VerifyTimeout time.Duration
	// VerifyInterval is the pause between two verify probes. Default 5ms.
	VerifyInterval time.Duration
	// Settle and Confirmations: nginx starts its new workers and lets the
	// old ones go on accepting new connections for about 100 ms more (longer
	// when the host is busy), so a flip is only confirmed once Confirmations
	// probes in a row, each on a new connection, answered with the new
	// generation, the last one at least Settle after the reload command
	// returned. Defaults 120ms and 5; a negative Settle does not wait.
	Settle        time.Duration
	Confirmations int
	// ProbeTimeout bounds one probe of verify_url. Default 1s.
	ProbeTimeout time.Duration
	// CommandTimeout bounds each run of the test and reload commands.
	// Default 30s.
	CommandTimeout time.Duration
	// Run runs a test or reload command (argv, no shell) and returns its
	// combined output. Default: os/exec.
	Run func(ctx context.Context, argv []string) ([]byte, error)
	// Client sends the probes. Default: a client that opens a new connection
	// for every probe, so that probes reach nginx's newest workers.
	Client *http.Client
	// Logger records each flip step. Default: discard.
	Logger *slog.Logger
}

func (o *Options) fill() {
	lb.SetDefault(&o.VerifyTimeout, 5*time.Second)
	lb.SetDefault(&o.VerifyInterval, 5*time.Millisecond)
	o.Settle = cmp.Or(o.Settle, 120*time.Millisecond) // a negative Settle stays: no wait
	lb.SetDefault(&o.Confirmations, 5)
	lb.SetDefault(&o.ProbeTimeout, time.Second)
	lb.SetDefault(&o.CommandTimeout, 30*time.Second)
	if o.Run == nil {
		o.Run = runCommand
	}
	if o.Client == nil {
		o.Client = &http.Client{
			Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
			// A probe reports the redirect itself, not where it leads.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	o.Logger = lb.OrDiscard(o.Logger)
}

// Balancer drives one service's nginx file.
type Balancer struct {
	service string
	cfg     config.Nginx
	tmpl    *template.Template
	opts    Options
	// log follows lb.nginx.access_log for Observe, from its first call.
	logOnce sync.Once
	log     *accessLog
}

// New returns the nginx balancer of service. cfg is the service's lb.nginx
// section with defaults filled (config.Load does that); it must pass
// config.Nginx.Check. The zero Options gives every default. A template that
// cannot be read, does not parse or fails on sample data is an error
// wrapping config.ErrInvalid.
func New(service string, cfg config.Nginx, o Options) (*Balancer, error) {
	o.fill()
	if err := cfg.Check(service); err != nil {
		return nil, err
	}
	if cfg.Mode == config.NginxRuntime {
		b := &Balancer{service: service, cfg: cfg, opts: o}
		if err := b.newRuntime(); err != nil {
			return nil, err
		}
		if _, err := b.Render(lb.SampleRoute(service)); err != nil {
			return nil, err
		}
		return b, nil
	}
	text, name := templates.Nginx, "default nginx template"
	if cfg.Template != "" {
		data, err := os.ReadFile(cfg.Template)
		if err != nil {
			return nil, fmt.Errorf("%w: service %q: lb.nginx.template: %v", config.ErrInvalid, service, err)
		}
		text, name = string(data), cfg.Template
	}
	tmpl, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%w: service %q: lb.nginx.template does not parse: %v", config.ErrInvalid, service, err)
	}
	b := &Balancer{service: service, cfg: cfg, tmpl: tmpl, opts: o}
	if _, err := b.Render(lb.SampleRoute(service)); err != nil {
		return nil, err
	}
	return b, nil
}

// hostName is what a slot's host may be to be written as an upstream.
var hostName = regexp.MustCompile(`^([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])$`)

// Slot is one slot as a template sees it.
type Slot struct {
	// Color is "blue" or "green": template data stays a plain string (not
	// config.Color), so a template may pass it where a string is expected.
	Color string
	Host  string
	Port  int
	Addr  string // host:port
	// Weight is the slot's percentage of new requests during a split
	// (Data.Split), 0 otherwise.
	Weight int
	// AddrRegexp is Addr as a regular expression matching the address
	// nginx writes in $upstream_addr (set only during a split, whose slot
	// hosts are IP addresses).
	AddrRegexp string
}

// Data is what a template receives; see the package documentation.
type Data struct {
	Service          string
	Upstream         string
	Listen           string
	Generation       uint64
	Color            string
	Active, Standby  Slot
	HealthPath       string
	GenerationHeader string
	SlotHeader       string
	// Split: new requests are shared between Active and Standby by their
	// Weight (a canary); false: all go to Active.
	Split bool
	// Sticky: the split keeps each client on one colour with the cookie
	// StickyCookie. Never true without Split.
	Sticky bool
	// StickyCookie is the sticky cookie's name, lb.StickyCookie(Service).
	StickyCookie string
	// Vars is the prefix of the service's nginx variables, bgd_<service>
	// with every character but letters, digits and '_' made '_'.
	Vars          string
	ActiveHeader  string
	WeightsHeader string
	// AccessLog is lb.nginx.access_log: where nginx logs each request's
	// upstream address, status and time as JSON for bgd's analysis; "":
	// no such log.
	AccessLog string
	// Shadow: nginx copies each request to Standby (mirror) and discards
	// its answers (shadow traffic); ShadowBodyBuffer is the
	// client_body_buffer_size that keeps a copied body in memory.
	Shadow           bool
	ShadowBodyBuffer string
	// ShadowPath is the internal location of the copies, ShadowTimeout
	// the copies' proxy timeouts.
	ShadowPath    string
	ShadowTimeout string
	// Maintenance: every request is answered 503 with RetryAfter and
	// MaintenancePage (a file: the page bgd writes beside lb.nginx.file),
	// or MaintenanceText when the route has no page.
	Maintenance     bool
	MaintenancePage string
	MaintenanceText string
	RetryAfter      string
}

func slotOf(u lb.Upstream, split bool) Slot {
	s := Slot{Color: u.Color.String(), Host: u.Host, Port: u.Port, Addr: u.Addr()}
	if split {
		s.Weight = u.Weight
		a, _ := netip.ParseAddr(strings.Trim(u.Host, "[]"))
		host := a.String()
		if a.Is6() {
			host = "[" + host + "]"
		}
		s.AddrRegexp = regexp.QuoteMeta(fmt.Sprintf("%s:%d", host, u.Port))
	}
	return s
}

// Render returns exactly the file a Flip to r writes. A route that names no
// usable active address, or a template that fails on it, is an error
// wrapping config.ErrInvalid.
func (b *Balancer) Render(r lb.Route) ([]byte, error) {
	if err := b.checkRoute(r); err != nil {
		return nil, err
	}
	if b.runtime() {
		return b.renderRuntime(r)
	}
	split := r.Splits()
	d := Data{
		Service:          b.service,
		Upstream:         "bgd_" + b.service,
		Listen:           b.cfg.Listen,
		Generation:       r.Generation,
		Color:            r.Active.Color.String(),
		Active:           slotOf(r.Active, split),
		Standby:          slotOf(r.Standby, split),
		HealthPath:       r.HealthPath,
		GenerationHeader: GenerationHeader,
		SlotHeader:       SlotHeader,
		Split:            split,
		Sticky:           split && r.Sticky,
		AccessLog:        b.cfg.AccessLog,
		StickyCookie:     lb.StickyCookie(b.service),
		Vars:             lb.StickyCookie(b.service),
		ActiveHeader:     ActiveHeader,
		WeightsHeader:    WeightsHeader,
		Shadow:           r.Shadow,
		ShadowBodyBuffer: shadowBodyBuffer,
		ShadowPath:       ShadowPath,
		ShadowTimeout:    shadowTimeout,
	}
	setMaintenance(&d, r, b.pageFile())
	var buf bytes.Buffer
	if err := b.tmpl.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("%w: service %q: rendering %s: %v", config.ErrInvalid, b.service, b.tmpl.Name(), err)
	}
	if !bytes.Contains(buf.Bytes(), []byte(d.Active.Addr)) {
		return nil, fmt.Errorf("%w: service %q: %s renders no upstream for the active slot (its output does not contain %s): bgd never writes an empty upstream",
			config.ErrInvalid, b.service, b.tmpl.Name(), d.Active.Addr)
	}
	if err := b.checkSplit(d, buf.Bytes()); err != nil {
		return nil, err
	}
	if err := b.checkShadow(d, buf.Bytes()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkSplit makes sure that a template asked for a split wrote one (a
// template written before splits existed would send everything to Active
// and let the canary look healthy without traffic), and, for a sticky
// split, reads the cookie.
func (b *Balancer) checkSplit(d Data, out []byte) error {
	if !d.Split {
		return nil
	}
	server := regexp.MustCompile(`server\s+` + regexp.QuoteMeta(d.Standby.Addr) + `\s[^;]*\bweight=` + fmt.Sprint(d.Standby.Weight) + `[\s;]`)
	if !server.Match(out) {
		return fmt.Errorf("%w: service %q: %s renders no `server %s weight=%d;` for the canary (%s) of a split: a template that splits writes both slots into the upstream with weight={{.Active.Weight}} and weight={{.Standby.Weight}} when {{.Split}} is true (see the default template)",
			config.ErrInvalid, b.service, b.tmpl.Name(), d.Standby.Addr, d.Standby.Weight, d.Standby.Color)
	}
	if cookie := "$cookie_" + d.StickyCookie; d.Sticky && !bytes.Contains(out, []byte(cookie)) {
		return fmt.Errorf("%w: service %q: %s does not read %s for a sticky split: a template that keeps clients on one colour when {{.Sticky}} is true routes by that cookie (see the default template)",
			config.ErrInvalid, b.service, b.tmpl.Name(), cookie)
	}
	return nil
}

var _ lb.Capable = (*Balancer)(nil)

// Capabilities: today's routes and weighted splits (sticky or not), with
// slots on any host. The template writes each slot's Host into the upstream
// (nginx resolves a name when it loads the file) and, for a split, both
// slots with their weights; a split's slot hosts must be IP addresses,
// since nginx names the slot that served by the address it connected to.
// Shadow traffic is nginx's mirror (shadow.go); maintenance is rendered by
// the template (maintenance.go). nginx cannot hold requests and release
// them later without a reload trick, so a pause is refused.
//
// In mode runtime: today's routes and weighted splits (not sticky), with
// slots on any IP address; no shadow traffic, no maintenance.
func (b *Balancer) Capabilities() lb.Capabilities {
	if b.runtime() {
		return lb.Capabilities{Driver: runtimeDriver, Weights: true, RemoteHosts: true}
	}
	return lb.Capabilities{Driver: "nginx", Weights: true, RemoteHosts: true, Shadow: true, Maintenance: true}
}

func (b *Balancer) checkRoute(r lb.Route) error {
	if r.Service != "" && r.Service != b.service {
		return fmt.Errorf("nginx balancer of service %q asked to route service %q", b.service, r.Service)
	}
	for _, u := range []struct {
		role string
		u    lb.Upstream
	}{{"active", r.Active}, {"standby", r.Standby}} {
		if !u.u.Color.Valid() || !hostName.MatchString(u.u.Host) || u.u.Port < 1 || u.u.Port > 65535 {
			return fmt.Errorf("%w: service %q: %s slot %q at %q port %d cannot be written as an nginx upstream",
				config.ErrInvalid, b.service, u.role, u.u.Color, u.u.Host, u.u.Port)
		}
	}
	if err := b.Capabilities().Check(r); err != nil {
		return err
	}
	if r.Splits() {
		for _, u := range []lb.Upstream{r.Active, r.Standby} {
			if _, err := netip.ParseAddr(strings.Trim(u.Host, "[]")); err != nil {
				return &lb.UnsupportedError{Driver: "nginx", Feature: lb.FeatureWeights, Service: r.Service,
					Detail: fmt.Sprintf("the %s slot's host %q is a name, and nginx reports the address it resolved it to, so the colour that served a split request could not be told: give the slot's host as an IP address", u.Color, u.Host)}
			}
		}
	}
	return nil
}

// Flip writes the file for r, has nginx test and load it, and confirms from
// nginx's own answers that generation r.Generation is live. On error the
// previous file is back in place and the error says what happened to nginx.
func (b *Balancer) Flip(ctx context.Context, r lb.Route) error {
	if b.runtime() {
		return b.flipRuntime(ctx, r)
	}
	start := time.Now()
	log := b.opts.Logger.With("service", b.service, "slot", r.Active.Color, "generation", r.Generation)
	data, err := b.Render(r)
	if err != nil {
		return err
	}
	f, err := readServiceFile(b.cfg.File)
	if err != nil {
		return err
	}
	want := fmt.Sprint(r.Generation)
	if f.existed && bytes.Equal(f.prev, data) {
		// A repeated flip: nothing to write if nginx already serves it.
		if ans := b.probe(ctx); ans.generation == want {
			log.Info("nginx already serves this generation")
			return nil
		}
	}
	if err := b.writePage(r); err != nil {
		return err
	}
	if err := fsx.WriteFileAtomic(f.path, data, f.perm); err != nil {
		return fmt.Errorf("nginx: %w", err)
	}
	if err := b.testNew(ctx, log, f); err != nil {
		return err
	}
	if err := b.reloadNew(ctx, log, f); err != nil {
		return err
	}
	if err := b.confirm(ctx, log, f, want); err != nil {
		return err
	}
	log.Info("nginx serves the new generation", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// serviceFile is the file bgd owns as it was before a flip, to restore it.
type serviceFile struct {
	path    string // the file a symlink points at, not the link
	prev    []byte
	existed bool
	perm    fs.FileMode
}

func readServiceFile(path string) (*serviceFile, error) {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	f := &serviceFile{path: path, perm: 0o644}
	prev, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("nginx: read the current %s: %w", path, err)
	}
	f.prev, f.existed = prev, err == nil
	if fi, err := os.Stat(path); err == nil {
		f.perm = fi.Mode().Perm()
	}
	return f, nil
}

// restore puts the previous file back (or removes the new one) and says
// what it did, for the error that follows.
func (f *serviceFile) restore() string {
	var err error
	if f.existed {
		err = fsx.WriteFileAtomic(f.path, f.prev, f.perm)
	} else if rerr := os.Remove(f.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = rerr
	}
	switch {
	case err != nil:
		return fmt.Sprintf("restoring the previous %s FAILED (%v): fix it by hand before nginx reloads", f.path, err)
	case f.existed:
		return fmt.Sprintf("the previous %s was restored", f.path)
	}
	return fmt.Sprintf("%s was removed again (it did not exist before)", f.path)
}

// reloadAgain reloads nginx with the restored file (even when ctx is
// cancelled mid-flip) and says how it went.
func (b *Balancer) reloadAgain(ctx context.Context) string {
	if out, err := b.run(context.WithoutCancel(ctx), b.cfg.Reload); err != nil {
		return fmt.Sprintf("reloading nginx again FAILED: %s: %s", cmdFailure(err), output(out))
	}
	return "nginx was reloaded again with it"
}

// testNew runs nginx -t on the new file; on failure the previous file is
// restored and nothing is reloaded.
func (b *Balancer) testNew(ctx context.Context, log *slog.Logger, f *serviceFile) error {
	out, err := b.run(ctx, b.cfg.Test)
	if err == nil {
		return nil
	}
	msg := f.restore()
	if ctx.Err() != nil {
		return fmt.Errorf("nginx: flip of service %q cancelled while %s ran (%w); %s and nothing was reloaded",
			b.service, quote(b.cfg.Test), ctx.Err(), msg)
	}
	log.Error("nginx rejected the new configuration", "err", err)
	return fmt.Errorf("%w: %s for service %q: %s: %s; %s and nothing was reloaded",
		ErrRejected, quote(b.cfg.Test), b.service, cmdFailure(err), output(out), msg)
}

// reloadNew makes nginx load the new file; on failure the previous file is
// restored (and reloaded again if the reload may have gone out).
func (b *Balancer) reloadNew(ctx context.Context, log *slog.Logger, f *serviceFile) error {
	out, err := b.run(ctx, b.cfg.Reload)
	if err == nil {
		return nil
	}
	msg := f.restore()
	if ctx.Err() != nil {
		// The signal may have gone out before the command was stopped.
		return fmt.Errorf("nginx: flip of service %q cancelled while %s ran (%w); %s and %s",
			b.service, quote(b.cfg.Reload), ctx.Err(), msg, b.reloadAgain(ctx))
	}
	log.Error("nginx reload failed", "err", err)
	return fmt.Errorf("%w: nginx for service %q: %s: %s: %s; %s: is the nginx master running, and is its pid file where the reload command looks?",
		lb.ErrUnreachable, b.service, quote(b.cfg.Reload), cmdFailure(err), output(out), msg)
}

// confirm waits until nginx itself answers with the new generation; else the
// previous file is restored and nginx reloaded again with it.
func (b *Balancer) confirm(ctx context.Context, log *slog.Logger, f *serviceFile, want string) error {
	ans, err := b.waitGeneration(ctx, want, time.Now())
	if err == nil {
		return nil
	}
	msg := f.restore()
	again := b.reloadAgain(ctx)
	log.Error("nginx never served the new generation", "err", err, "last_answer", ans.String())
	what := "so nginx kept its previous configuration (a reload it cannot apply, e.g. a listen address already in use, is only reported in nginx's error log)"
	if ctx.Err() != nil {
		what = "the flip was cancelled before nginx confirmed it"
	}
	return fmt.Errorf("%w: nginx for service %q: %s ran, but %s did not answer with %s %s (%w; last answer: %s): %s; %s and %s",
		lb.ErrNotConfirmed, b.service, quote(b.cfg.Reload), b.cfg.VerifyURL, GenerationHeader, want, err, ans, what, msg, again)
}

// Active asks nginx which colour it routes to: the active header of an
// answer from verify_url (a split's stable colour, whichever colour served
// the probe), or, when the answer has none (no split), its slot header.
func (b *Balancer) Active(ctx context.Context) (config.Color, error) {
	ans := b.probe(ctx)
	header, color := SlotHeader, ans.slot
	if ans.active != "" {
		header, color = ActiveHeader, ans.active
	}
	switch {
	case ans.err != nil:
		return "", fmt.Errorf("%w: nginx for service %q: %s: %v", lb.ErrUnreachable, b.service, b.cfg.VerifyURL, ans.err)
	case color == "":
		return "", fmt.Errorf("nginx for service %q: %s answered %d without a %s header: is bgd's file included, and does its template set the header?",
			b.service, b.cfg.VerifyURL, ans.status, SlotHeader)
	case !config.Color(color).Valid():
		return "", fmt.Errorf("nginx for service %q: %s answered %s %q, not blue or green", b.service, b.cfg.VerifyURL, header, color)
	}
	return config.Color(color), nil
}

func (b *Balancer) run(ctx context.Context, argv []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.CommandTimeout)
	defer cancel()
	return b.opts.Run(ctx, argv)
}

func runCommand(ctx context.Context, argv []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	return cmd.CombinedOutput()
}

func cmdFailure(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	return err.Error()
}

func output(out []byte) string {
	s := strings.TrimSpace(string(out))
	if s == "" {
		return "(no output)"
	}
	return strings.ReplaceAll(s, "\n", " | ")
}

func quote(argv []string) string { return "`" + strings.Join(argv, " ") + "`" }
