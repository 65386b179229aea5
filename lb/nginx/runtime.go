package nginx

// Runtime mode (lb.nginx.mode: runtime): the file is rendered once from
// templates.NginxRuntime, with both slots' addresses, and a flip is one
// HTTP PUT to a loopback-only location of that file, whose Lua code keeps
// the route in a lua_shared_dict; a Lua balancer reads it for every
// request. No reload, so nginx's workers never close idle keep-alive
// client connections because of a flip. bgd keeps the route in a file
// beside lb.nginx.file too (RouteFile), which nginx reads when its dict is
// empty: after a restart. A reload keeps the dict (same name and size).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/fsx"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/templates"
)

// AdminPath is the runtime mode's loopback-only location: GET says the
// route in force, PUT sets a route.
const AdminPath = "/_bgd/runtime"

// RuntimeHeader is set on every answer of AdminPath, naming the service,
// so that bgd never takes the answer of a slot (a configuration without
// the location proxies the path to the app) for nginx's.
const RuntimeHeader = "X-Bgd-Runtime"

// runtimeDriver names the driver in mode runtime in refusals ("the nginx
// (mode runtime) driver does not support maintenance"), so that they say
// that mode reload would do it.
const runtimeDriver = "nginx (mode runtime)"

// RuntimeSlot is one slot as the runtime template sees it.
type RuntimeSlot struct {
	IP   string // an IP address, without brackets (what ngx.balancer takes)
	Port int
	Addr string // host:port as given
}

// RuntimeData is what the runtime template receives.
type RuntimeData struct {
	Service, Upstream, Vars, Listen, AccessLog string
	// RouteFile is where bgd keeps the route in force; AdminPath the
	// location that sets it.
	RouteFile, AdminPath string
	Blue, Green          RuntimeSlot
	GenerationHeader     string
	SlotHeader           string
	ActiveHeader         string
	WeightsHeader        string
	RuntimeHeader        string
}

// RouteFile is where bgd keeps the route of service in runtime mode:
// lb.nginx.file with ".route" added (not ending in .conf, so an include of
// conf.d/*.conf does not load it).
func (b *Balancer) RouteFile() string { return b.cfg.File + ".route" }

// runtime reports whether the balancer is in runtime mode.
func (b *Balancer) runtime() bool { return b.cfg.Mode == config.NginxRuntime }

// newRuntime prepares b for runtime mode: the template, and nginx's Lua
// module, which must exist and load into this nginx.
func (b *Balancer) newRuntime() error {
	if b.cfg.Template != "" {
		return fmt.Errorf("%w: service %q: lb.nginx.template is for mode reload; mode runtime renders its own file (see `bgd render`)", config.ErrInvalid, b.service)
	}
	tmpl, err := template.New("nginx runtime template").Option("missingkey=error").Parse(templates.NginxRuntime)
	if err != nil {
		return err
	}
	b.tmpl = tmpl
	return b.checkLuaModule()
}

// checkLuaModule refuses runtime mode on an nginx without its Lua module:
// the module file must exist and, when the test command is nginx itself,
// a probe configuration that loads it (with the NDK beside it, which
// Debian's build needs) and uses lua_shared_dict must pass `nginx -t`.
func (b *Balancer) checkLuaModule() error {
	mod := b.cfg.LuaModule
	if mod == "" {
		mod = config.DefaultLuaModule
	}
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: service %q: lb.nginx.mode runtime needs nginx's Lua module (ngx_http_lua_module): %s; install it (Debian, Ubuntu: apt-get install libnginx-mod-http-lua), set lb.nginx.lua_module to its file, or use mode reload",
			config.ErrInvalid, b.service, fmt.Sprintf(format, args...))
	}
	fi, err := os.Stat(mod)
	if err != nil {
		return refuse("%s: %v", mod, errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return refuse("%s is not a file", mod)
	}
	bin := b.cfg.Test[0]
	if filepath.Base(bin) != "nginx" {
		return nil // a wrapper (sudo, a script): the first flip's test says it
	}
	dir, err := os.MkdirTemp("", "bgd-nginx-lua-probe-")
	if err != nil {
		return fmt.Errorf("nginx: probing the Lua module: %w", err)
	}
	defer os.RemoveAll(dir)
	var conf strings.Builder
	if ndk := filepath.Join(filepath.Dir(mod), "ndk_http_module.so"); fileExists(ndk) {
		fmt.Fprintf(&conf, "load_module %s;\n", ndk)
	}
	fmt.Fprintf(&conf, "load_module %s;\npid %s;\nerror_log %s;\nevents {}\nhttp {\n    lua_shared_dict bgd_probe 16k;\n}\n",
		mod, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"))
	path := filepath.Join(dir, "probe.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		return fmt.Errorf("nginx: probing the Lua module: %w", err)
	}
	argv := []string{bin, "-t", "-q", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path}
	if out, err := b.run(context.Background(), argv); err != nil {
		return refuse("%s cannot load %s (%s: %s)", bin, mod, cmdFailure(err), output(out))
	}
	return nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// runtimeSlot is u for the runtime template; its host must be an IP
// address, which the Lua balancer connects to.
func (b *Balancer) runtimeSlot(u lb.Upstream) (RuntimeSlot, error) {
	a, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	if err != nil {
		return RuntimeSlot{}, &lb.UnsupportedError{Driver: runtimeDriver, Feature: lb.FeatureRemoteHosts, Service: b.service,
			Detail: fmt.Sprintf("in mode runtime the Lua balancer connects to IP addresses, and the %s slot's host %q is a name: give it as an IP address, or use mode reload", u.Color, u.Host)}
	}
	return RuntimeSlot{IP: a.String(), Port: u.Port, Addr: u.Addr()}, nil
}

// renderRuntime is the runtime mode's file: the same for every route with
// these slot addresses, whatever the active colour, weights or generation.
func (b *Balancer) renderRuntime(r lb.Route) ([]byte, error) {
	if r.Sticky && r.Splits() {
		return nil, &lb.UnsupportedError{Driver: runtimeDriver, Feature: lb.FeatureWeights, Service: b.service,
			Detail: "a sticky split (canary.sticky) in mode runtime: its Lua balancer splits per request; use mode reload for sticky splits"}
	}
	d := RuntimeData{
		Service: b.service, Upstream: "bgd_" + b.service, Vars: lb.StickyCookie(b.service),
		Listen: b.cfg.Listen, AccessLog: b.cfg.AccessLog, RouteFile: b.RouteFile(), AdminPath: AdminPath,
		GenerationHeader: GenerationHeader, SlotHeader: SlotHeader, ActiveHeader: ActiveHeader,
		WeightsHeader: WeightsHeader, RuntimeHeader: RuntimeHeader,
	}
	for _, u := range []lb.Upstream{r.Active, r.Standby} {
		s, err := b.runtimeSlot(u)
		if err != nil {
			return nil, err
		}
		if u.Color == config.Blue {
			d.Blue = s
		} else {
			d.Green = s
		}
	}
	var buf bytes.Buffer
	if err := b.tmpl.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("%w: service %q: rendering %s: %v", config.ErrInvalid, b.service, b.tmpl.Name(), err)
	}
	return buf.Bytes(), nil
}

// routeText is r as the Lua code and the route file read it.
func routeText(r lb.Route) string {
	w := map[config.Color]int{r.Active.Color: 100, r.Standby.Color: 0}
	if r.Splits() {
		w[r.Active.Color], w[r.Standby.Color] = r.Active.Weight, r.Standby.Weight
	}
	return fmt.Sprintf("generation=%d\nactive=%s\nblue=%d\ngreen=%d\n", r.Generation, r.Active.Color, w[config.Blue], w[config.Green])
}

// adminURL is AdminPath at verify_url's scheme, host and port.
func (b *Balancer) adminURL() (string, error) {
	u, err := url.Parse(b.cfg.VerifyURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("nginx for service %q: lb.nginx.verify_url %q is not an absolute URL, so bgd cannot reach %s", b.service, b.cfg.VerifyURL, AdminPath)
	}
	return u.Scheme + "://" + u.Host + AdminPath, nil
}

// runtimeState is an answer of AdminPath.
type runtimeState struct {
	status  int
	runtime bool // the answer came from the runtime location
	values  map[string]string
	body    string
	err     error
}

// admin sends one request to AdminPath (body "" for a GET).
func (b *Balancer) admin(ctx context.Context, body string) runtimeState {
	u, err := b.adminURL()
	if err != nil {
		return runtimeState{err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.ProbeTimeout)
	defer cancel()
	method, rd := http.MethodGet, io.Reader(nil)
	if body != "" {
		method, rd = http.MethodPut, strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return runtimeState{err: err}
	}
	req.Header.Set("User-Agent", "bgd-nginx-runtime")
	resp, err := b.opts.Client.Do(req)
	if err != nil {
		return runtimeState{err: err}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	s := runtimeState{status: resp.StatusCode, runtime: resp.Header.Get(RuntimeHeader) == b.service,
		values: map[string]string{}, body: strings.TrimSpace(string(data))}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			s.values[k] = v
		}
	}
	return s
}

func (s runtimeState) String() string {
	switch {
	case s.err != nil:
		return s.err.Error()
	case !s.runtime:
		return fmt.Sprintf("status %d without %s: not bgd's runtime location (is the file loaded?)", s.status, RuntimeHeader)
	}
	return fmt.Sprintf("status %d: %s", s.status, strings.ReplaceAll(s.body, "\n", " "))
}

// flipRuntime: the file in place (written, tested and reloaded only when
// it differs: the first flip, new slot addresses), the route file, one
// PUT whose answer names the generation, then verify_url's answer.
func (b *Balancer) flipRuntime(ctx context.Context, r lb.Route) error {
	start := time.Now()
	log := b.opts.Logger.With("service", b.service, "slot", r.Active.Color, "generation", r.Generation, "mode", "runtime")
	data, err := b.Render(r)
	if err != nil {
		return err
	}
	f, err := readServiceFile(b.cfg.File)
	if err != nil {
		return err
	}
	rf, err := readServiceFile(b.RouteFile())
	if err != nil {
		return err
	}
	text := routeText(r)
	if err := fsx.WriteFileAtomic(rf.path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("nginx: writing the route of service %q: %w (it goes beside lb.nginx.file)", b.service, err)
	}
	reloaded := time.Time{}
	if !f.existed || !bytes.Equal(f.prev, data) {
		if err := fsx.WriteFileAtomic(f.path, data, f.perm); err != nil {
			rf.restore()
			return fmt.Errorf("nginx: %w", err)
		}
		if err := b.testNew(ctx, log, f); err != nil {
			rf.restore()
			return luaHint(err)
		}
		if err := b.reloadNew(ctx, log, f); err != nil {
			rf.restore()
			return err
		}
		reloaded = time.Now()
		log.Info("nginx reloaded with the runtime file")
	}
	want := strconv.FormatUint(r.Generation, 10)
	s, err := b.putRoute(ctx, text, want, !reloaded.IsZero())
	if err != nil {
		msg := rf.restore()
		if !reloaded.IsZero() {
			msg += "; " + f.restore() + " and " + b.reloadAgain(ctx)
		}
		log.Error("nginx did not take the route", "err", err, "last_answer", s.String())
		return fmt.Errorf("%w: nginx for service %q: PUT %s: %v (last answer: %s); %s",
			lb.ErrNotConfirmed, b.service, AdminPath, err, s, msg)
	}
	if reloaded.IsZero() {
		reloaded = time.Now().Add(-b.opts.Settle) // no reload: nothing to settle
	}
	if ans, err := b.waitRuntime(ctx, want, reloaded); err != nil {
		if rf.existed {
			b.admin(context.WithoutCancel(ctx), string(rf.prev))
		}
		msg := rf.restore()
		return fmt.Errorf("%w: nginx for service %q: %s took generation %s, but %s did not answer with %s %s (%v; last answer: %s); %s and the previous route was sent back",
			lb.ErrNotConfirmed, b.service, AdminPath, want, b.cfg.VerifyURL, GenerationHeader, want, err, ans, msg)
	}
	log.Info("nginx serves the new generation", "elapsed", time.Since(start).Round(time.Microsecond))
	return nil
}

// putRoute sends the route; right after a reload it first waits (up to
// VerifyTimeout) for the runtime location to answer.
func (b *Balancer) putRoute(ctx context.Context, text, want string, wait bool) (runtimeState, error) {
	deadline := time.Now().Add(b.opts.VerifyTimeout)
	for {
		s := b.admin(ctx, text)
		switch {
		case s.err == nil && s.runtime && s.status == http.StatusOK && s.values["generation"] == want:
			return s, nil
		case s.err == nil && s.runtime && s.status == http.StatusBadRequest:
			return s, errors.New("nginx refused the route")
		case !wait || time.Now().After(deadline):
			if s.err != nil {
				return s, fmt.Errorf("%w: %v", lb.ErrUnreachable, s.err)
			}
			return s, errors.New("no answer naming the generation")
		case ctx.Err() != nil:
			return s, ctx.Err()
		}
		time.Sleep(b.opts.VerifyInterval)
	}
}

// waitRuntime probes verify_url until it answers with generation want.
// Without a reload the shared dict is every worker's at once, so one
// answer is enough; after a reload, waitGeneration's streak and settle.
func (b *Balancer) waitRuntime(ctx context.Context, want string, reloaded time.Time) (answer, error) {
	if time.Since(reloaded) < b.opts.Settle {
		return b.waitGeneration(ctx, want, reloaded)
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.VerifyTimeout)
	defer cancel()
	for {
		ans := b.probe(ctx)
		if ans.generation == want {
			return ans, nil
		}
		select {
		case <-ctx.Done():
			return ans, fmt.Errorf("gave up after %s", b.opts.VerifyTimeout)
		case <-time.After(b.opts.VerifyInterval):
		}
	}
}

// luaHint adds, to nginx -t's refusal of an unknown Lua directive, that
// the module is not loaded.
func luaHint(err error) error {
	if strings.Contains(err.Error(), "unknown directive \"lua_shared_dict\"") {
		return fmt.Errorf("%w (nginx does not load its Lua module: add `load_module modules/ndk_http_module.so; load_module modules/ngx_http_lua_module.so;` to nginx.conf's main context, or on Debian install libnginx-mod-http-lua, which adds them to modules-enabled/)", err)
	}
	return err
}
