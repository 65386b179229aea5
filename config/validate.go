package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// namePattern is what may reach nginx or HAProxy syntax (service and backend
// names): anything else could inject directives.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// ValidName reports whether s may name a service or an HAProxy backend:
// only letters, digits, '_', '.' and '-', which nginx and HAProxy syntax,
// HAProxy's command lines and map files, and file names all take as one
// word. (Validate also bounds a service name's length: MaxName.)
func ValidName(s string) bool { return namePattern.MatchString(s) }

// nameRule ends the message about a name ValidName refuses.
const nameRule = "use only letters, digits, '_', '.' and '-'"

// MaxProblems caps how many problems one error lists: a config with
// thousands of bad services gets a readable message, not megabytes.
const MaxProblems = 50

// MaxName is the longest service name: names become file names
// (<state_dir>/<name>.json, bgd-<name>.conf) and nginx/HAProxy identifiers.
const MaxName = 128

// reservedEnv are set by bgd for every slot; the slot finder (reconcile)
// and the health probes rely on them, so env may not override them.
var reservedEnv = map[string]bool{"PORT": true, "BG_COLOR": true, "BG_RELEASE": true}

// Validate checks everything that would otherwise fail late or inject into
// load balancer syntax. All problems are reported at once (up to
// MaxProblems). Every check is linear in the number of services.
func (c *Config) Validate() error {
	var errs []string
	var add adder = func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if len(c.Services) == 0 {
		add("no services: add one under services:")
	}
	if hasNUL(c.StateDir, c.StateFile) {
		add("state_dir %q or BG_STATE_FILE %q contains a NUL byte, which no path can hold", c.StateDir, c.StateFile)
	}
	if hasNUL(c.Metrics.TextfileDir) {
		add("metrics.textfile_dir %q contains a NUL byte, which no path can hold", c.Metrics.TextfileDir)
	}
	c.State.validate(add)
	addrs := newAddrIndex()
	ck := newChecker()
	cookies := map[string]string{} // sticky cookie name: service
	for _, name := range c.ServiceNames() {
		s := c.Services[name]
		validateName(name, add)
		if other, ok := cookies[StickyCookie(name)]; ok {
			add("services %q and %q differ only by '.', '-' or '_': their canaries would share the cookie %s and nginx variables; rename one", other, name, StickyCookie(name))
		}
		cookies[StickyCookie(name)] = name
		s.validateAnalysis(name, add)
		s.validateSlot(name, add, ck)
		s.validatePorts(name, addrs, add)
		s.validateHosts(name, add)
		s.validateDurations(name, add)
		s.validateHealth(name, add)
		s.validateSmoke(name, add)
		switch s.LB.Driver {
		case "builtin":
			s.validateBuiltin(name, addrs, add)
		case "nginx":
			s.validateNginx(name, addrs, ck, add)
		case "haproxy":
			s.validateHAProxy(name, addrs, add)
		default:
			add("service %q: lb.driver %q is unknown (use builtin, nginx or haproxy)", name, s.LB.Driver)
		}
	}
	if len(errs) > MaxProblems {
		errs = append(errs[:MaxProblems], fmt.Sprintf("and %d more problems", len(errs)-MaxProblems))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// adder records one validation problem.
type adder = func(format string, args ...any)

func validateName(name string, add adder) {
	if !ValidName(name) {
		add("service name %q: %s", name, nameRule)
	} else if len(name) > MaxName {
		add("service name %.20q... is %d characters long: at most %d", name, len(name), MaxName)
	}
}

// validatePorts checks each slot's port and reserves it on every address:
// a slot's app gets PORT and may bind it on any address.
func (s *Service) validatePorts(name string, addrs *addrIndex, add adder) {
	for _, col := range Colors {
		p := s.Port(col)
		if p < 1 || p > 65535 {
			add("service %q: %s port %d is out of range 1-65535", name, col, p)
			continue
		}
		if other := addrs.add(use{port: p, wild: true, who: fmt.Sprintf("service %q %s", name, col)}); other != nil {
			add("service %q: %s port %d is already used by %s", name, col, p, other.who)
		}
	}
}

func (s *Service) validateHealth(name string, add adder) {
	if !strings.HasPrefix(s.Health.Path, "/") || strings.ContainsAny(s.Health.Path, " \t\r\n\"';{}\x00") {
		add("service %q: health.path %q must start with / and contain no spaces, quotes, ';' or braces", name, s.Health.Path)
	}
	if st := s.Health.ExpectStatus; st != 0 && (st < 100 || st > 599) {
		add("service %q: health.expect_status %d is not an HTTP status", name, st)
	}
	if n := s.Health.MaxRestarts; n < 0 {
		add("service %q: health.max_restarts %d is negative: 0 turns the sweep's restarts off", name, n)
	}
	if d := s.PauseTimeout; d < 0 {
		add("service %q: pause_timeout %s is negative: how long bgd pause may hold requests, e.g. 30s", name, d)
	}
	if n := s.FailoverAfter; n < 1 {
		add("service %q: failover_after %d must be at least 1 (the consecutive failed probes of the active slot before a sweep fails over; 1: the first one)", name, n)
	}
	if s.Runner != RunnerProcess && s.Runner != RunnerSystemd {
		add("service %q: runner %q is unknown (use %s or %s)", name, s.Runner, RunnerProcess, RunnerSystemd)
	}
}

func (s *Service) validateBuiltin(name string, addrs *addrIndex, add adder) {
	key := "lb.builtin.listen"
	host, port, err := net.SplitHostPort(s.LB.Builtin.Listen)
	pn, perr := strconv.Atoi(port)
	if err != nil || perr != nil || pn < 1 || pn > 65535 || !digits(port) {
		add("service %q: %s %q is not host:port (port 1-65535)", name, key, s.LB.Builtin.Listen)
		return
	}
	s.addListen(name, key, host, pn, "", addrs, add)
	s.validateAdmin(name, host, pn, addrs, add)
}

// validateAdmin checks lb.builtin.admin_listen: a unix socket path, the
// proxy's listen itself, or a loopback host:port of its own, recorded
// among the addresses so that nothing else of the config binds it. Unix
// socket paths are left to the proxy, which reports one it cannot bind
// (two services naming the same path: the second finds the first's).
func (s *Service) validateAdmin(name, listenHost string, listenPort int, addrs *addrIndex, add adder) {
	const key = "lb.builtin.admin_listen"
	a := s.LB.Builtin.AdminListen
	if a == "" {
		return
	}
	if p, ok := AdminSocket(a); ok {
		if p == "" || strings.ContainsRune(p, 0) {
			add("service %q: %s %q: give the socket's path after \"unix:\"", name, key, a)
			return
		}
		p = filepath.Clean(p)
		if other, ok := addrs.sockets[p]; ok {
			add("service %q: %s %q is already the admin socket of service %q: give each service its own", name, key, a, other)
			return
		}
		addrs.sockets[p] = name
		return
	}
	host, port, err := net.SplitHostPort(a)
	pn, perr := strconv.Atoi(port)
	if err != nil || perr != nil || pn < 1 || pn > 65535 || !digits(port) {
		add("service %q: %s %q is neither unix:<path> nor host:port (port 1-65535)", name, key, a)
		return
	}
	if sameHostPort(a, net.JoinHostPort(listenHost, strconv.Itoa(listenPort))) {
		return // the proxy's own listener: admin paths shadow the app's
	}
	if !loopbackHost(host) {
		add("service %q: %s %q is not a loopback address: the admin endpoints answer loopback clients only; use 127.0.0.1:%d, a unix socket (unix:<path>), or lb.builtin.listen itself", name, key, a, pn)
		return
	}
	s.addListen(name, key, host, pn, "", addrs, add)
}

// loopbackHost reports whether host names only loopback addresses.
func loopbackHost(host string) bool {
	h := normHost(host)
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

func (s *Service) validateNginx(name string, addrs *addrIndex, ck *checker, add adder) {
	n := s.LB.Nginx
	if msg := checkListen(n.Listen); msg != "" {
		add("service %q: lb.nginx.listen %q: %s", name, n.Listen, msg)
	} else {
		// One nginx serves every nginx service: they may share an address
		// when each template tells them apart (server_name); the default
		// template does not.
		share := ""
		if n.Template != "" {
			share = "nginx"
		}
		host, pn := splitListen(n.Listen)
		s.addListen(name, "lb.nginx.listen", host, pn, share, addrs, add)
	}
	for _, p := range n.problems(ck) {
		add("service %q: %s", name, p)
	}
}

func (s *Service) validateHAProxy(name string, addrs *addrIndex, add adder) {
	h := s.LB.HAProxy
	s.addDriverListen(name, "lb.haproxy.listen", h.Listen, h.Template, "haproxy", addrs, add)
	for _, p := range h.problems() {
		add("service %q: %s", name, p)
	}
	if host, pn, ok := h.tcpSocket(); ok {
		// Every HAProxy service may name the same admin socket.
		s.addListen(name, "lb.haproxy.socket", host, pn, "haproxy-admin", addrs, add)
	}
}

// addDriverListen checks an nginx or HAProxy listen and records its address.
// One nginx (one HAProxy) serves every service of its driver: they may share
// an address when each has a template of its own that tells them apart
// (server_name, ACLs); the default templates do not.
func (s *Service) addDriverListen(name, key, listen, template, driver string, addrs *addrIndex, add adder) {
	if msg := checkListen(listen); msg != "" {
		add("service %q: %s %q: %s", name, key, listen, msg)
		return
	}
	share := ""
	if template != "" {
		share = driver
	}
	host, pn := splitListen(listen)
	s.addListen(name, key, host, pn, share, addrs, add)
}

// addListen records that the service's load balancer binds host:port and
// reports what it collides with.
func (s *Service) addListen(name, key, host string, port int, share string, addrs *addrIndex, add adder) {
	u := newUse(host, port, share, fmt.Sprintf("service %q (%s %s)", name, key, net.JoinHostPort(host, strconv.Itoa(port))))
	if other := addrs.add(u); other != nil {
		add("service %q: %s port %d on %s is already used by %s: choose another port", name, key, port, displayHost(host), other.who)
	}
}

func displayHost(h string) string {
	if normHost(h) == "" {
		return "every address"
	}
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

// durationRules: the durations where 0 makes no sense, with their defaults.
var durationRules = []struct {
	key string
	get func(*Service) Duration
	def string
}{
	{"health.interval", func(s *Service) Duration { return s.Health.Interval }, "1s"},
	{"health.timeout", func(s *Service) Duration { return s.Health.Timeout }, "30s"},
	{"health.request_timeout", func(s *Service) Duration { return s.Health.RequestTimeout }, "2s"},
	{"health.restart_window", func(s *Service) Duration { return s.Health.RestartWindow }, "10m"},
}

// validateDurations refuses health durations below 1ms (an explicit 0 among
// them; a left-out key has its default by now). stop_grace 0 is allowed:
// SIGKILL right after SIGTERM.
func (s *Service) validateDurations(name string, add adder) {
	for _, r := range durationRules {
		if d := r.get(s); d < Duration(time.Millisecond) {
			where := ""
			if line := s.given[r.key]; line > 0 {
				where = fmt.Sprintf(" (line %d)", line)
			}
			add("service %q: %s is %s%s: it must be > 0, at least 1ms; leave the key out for the default %s", name, r.key, d, where, r.def)
		}
	}
}

// StickyCookie is the name of the cookie that keeps a client on one side
// of a sticky canary of service: "bgd_" and the service name, with every
// character other than a letter, a digit or '_' replaced by '_' (nginx
// reads it as $cookie_<name>, which allows nothing else). Validate refuses
// two services whose names give the same cookie.
func StickyCookie(service string) string {
	b := []byte("bgd_" + service)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// validateAnalysis refuses thresholds that mean nothing.
func (s *Service) validateAnalysis(name string, add adder) {
	a := s.Analysis
	if a.Interval < Duration(10*time.Millisecond) {
		add("service %q: analysis.interval is %s: at least 10ms (the load balancer is asked at each)", name, a.Interval)
	}
	if r := a.ErrorRate(); r < 0 || r > 1 {
		add("service %q: analysis.max_error_rate is %v: a share of requests, 0-1 (0.01 is 1%%)", name, r)
	}
	if a.MaxP99Ratio != 0 && a.MaxP99Ratio < 1 {
		add("service %q: analysis.max_p99_ratio is %v: at least 1 (2 is twice the old slot's latency), or 0 for none", name, a.MaxP99Ratio)
	}
	if a.MinRequests < 0 {
		add("service %q: analysis.min_requests is %d: at least 1", name, a.MinRequests)
	}
	if a.Window > 0 && a.Window < a.Interval {
		add("service %q: analysis.window %s is shorter than analysis.interval %s: nothing would be judged", name, a.Window, a.Interval)
	}
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func hasNUL(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

// listenPattern is a port or address:port as nginx's listen and HAProxy's
// bind take it: nothing that could end the directive or start another.
var listenPattern = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]*]+$`)

// checkListen returns why listen is not a port or address:port, or "".
func checkListen(listen string) string {
	if !listenPattern.MatchString(listen) {
		return "use a port or address:port"
	}
	if p, err := strconv.Atoi(listen[strings.LastIndex(listen, ":")+1:]); err != nil || p < 1 || p > 65535 {
		return "the port must be a number 1-65535"
	}
	return ""
}

// Check refuses an lb.nginx section (defaults filled) that the nginx driver
// cannot use or that would inject into nginx syntax, with an error wrapping
// ErrInvalid. It applies Validate's rules for the section, but for what
// only a whole configuration can tell (an address two services bind, a
// test or reload command missing from PATH); an empty listen is left to the
// driver. lb/nginx's New calls it, so a driver built from code gets the
// rules a configuration file gets.
func (n Nginx) Check(service string) error {
	return sectionErr(service, "lb.nginx", n.Listen, n.problems(nil))
}

// Check is Nginx.Check for an lb.haproxy section: nothing that could split
// a runtime API command line or a map file line, two distinct backends.
// lb/haproxy's New calls it.
func (h HAProxy) Check(service string) error {
	return sectionErr(service, "lb.haproxy", h.Listen, h.problems())
}

// sectionErr joins what Check found wrong with a service's name, its
// load balancer's listen (when given) and its section.
func sectionErr(service, key, listen string, problems []string) error {
	var errs []string
	if !ValidName(service) {
		errs = append(errs, fmt.Sprintf("service name %q: %s", service, nameRule))
	}
	if listen != "" {
		if msg := checkListen(listen); msg != "" {
			errs = append(errs, fmt.Sprintf("service %q: %s.listen %q: %s", service, key, listen, msg))
		}
	}
	for _, p := range problems {
		errs = append(errs, fmt.Sprintf("service %q: %s", service, p))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// problems lists what is wrong with an lb.nginx section besides its listen
// address; ck, when not nil, also checks that the test and reload commands
// exist.
func (n Nginx) problems(ck *checker) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if n.File == "" || strings.ContainsAny(n.File, "\n\"';{}\x00") || strings.HasSuffix(n.File, "/") {
		add("lb.nginx.file %q is not a usable path", n.File)
	}
	if strings.ContainsAny(n.Template, "\r\n\x00") {
		add("lb.nginx.template %q is not a usable path", n.Template)
	}
	if n.AccessLog != "" && (!filepath.IsAbs(n.AccessLog) || strings.ContainsAny(n.AccessLog, " \t\r\n\"';{}$\\\x00") || strings.HasSuffix(n.AccessLog, "/")) {
		add("lb.nginx.access_log %q: give an absolute file path without spaces, quotes, ';', '{', '}', '$' or '\\'", n.AccessLog)
	}
	for _, c := range []struct {
		key  string
		argv []string
	}{{"test", n.Test}, {"reload", n.Reload}} {
		if len(c.argv) == 0 || strings.TrimSpace(c.argv[0]) == "" {
			add("lb.nginx.%s is empty: give an argv, e.g. [\"nginx\", \"-t\"]", c.key)
			continue
		}
		if hasNUL(c.argv...) {
			add("lb.nginx.%s contains a NUL byte", c.key)
			continue
		}
		if ck == nil {
			continue
		}
		if msg := ck.command(c.argv[0], ""); msg != "" {
			add("lb.nginx.%s: %s", c.key, msg)
		}
	}
	if u, err := url.Parse(n.VerifyURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("lb.nginx.verify_url %q is not an http(s) URL", n.VerifyURL)
	}
	switch n.Mode {
	case "", NginxReload:
	case NginxRuntime:
		if !filepath.IsAbs(n.LuaModule) || strings.ContainsAny(n.LuaModule, " \t\r\n\"';{}$\\\x00") {
			add("lb.nginx.lua_module %q: give the absolute path of nginx's ngx_http_lua_module.so", n.LuaModule)
		}
	default:
		add("lb.nginx.mode %q is unknown (use reload or runtime)", n.Mode)
	}
	return out
}

// problems lists what is wrong with an lb.haproxy section besides its
// listen address and what its admin socket's address collides with.
func (h HAProxy) problems() []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if strings.ContainsAny(h.Template, "\r\n\x00") {
		add("lb.haproxy.template %q is not a usable path", h.Template)
	}
	for key := range h.Backends {
		if !key.Valid() {
			add("lb.haproxy.backends: unknown colour %q (use blue and green)", key)
		}
	}
	for _, col := range Colors {
		if b := h.Backends[col]; !ValidName(b) {
			add("lb.haproxy.backends.%s %q: %s", col, b, nameRule)
		}
	}
	if h.Backends[Blue] == h.Backends[Green] {
		add("lb.haproxy.backends: blue and green both name %q", h.Backends[Blue])
	}
	if h.SplitBackend == "" {
		// Left to the driver's default, <service>_split.
	} else if !ValidName(h.SplitBackend) {
		add("lb.haproxy.split_backend %q: %s", h.SplitBackend, nameRule)
	} else if h.SplitBackend == h.Backends[Blue] || h.SplitBackend == h.Backends[Green] {
		add("lb.haproxy.split_backend %q is also a colour's backend: the split backend holds both colours' servers", h.SplitBackend)
	}
	if strings.ContainsAny(h.MapFile, " \t\r\n\"';\x00") {
		add("lb.haproxy.map_file %q must not contain spaces, quotes or ';'", h.MapFile)
	} else if strings.ContainsAny(h.MapFile, "#\\") || !filepath.IsAbs(h.MapFile) {
		add("lb.haproxy.map_file %q: give an absolute path without '#' or '\\', as HAProxy's map() names it", h.MapFile)
	}
	if strings.HasPrefix(h.Socket, "tcp://") {
		if _, _, ok := h.tcpSocket(); !ok {
			add("lb.haproxy.socket %q: want tcp://host:port (port 1-65535)", h.Socket)
		}
	} else if p := strings.TrimPrefix(h.Socket, "unix://"); !filepath.IsAbs(p) || strings.ContainsAny(p, " \t\r\n\"';\x00") {
		add("lb.haproxy.socket %q: want an absolute unix socket path or tcp://host:port", h.Socket)
	}
	return out
}

// tcpSocket returns the host and port of a well-formed tcp:// admin
// socket; ok is false for a unix socket or a malformed address.
func (h HAProxy) tcpSocket() (host string, port int, ok bool) {
	addr, isTCP := strings.CutPrefix(h.Socket, "tcp://")
	if !isTCP {
		return "", 0, false
	}
	host, p, err := net.SplitHostPort(addr)
	pn, perr := strconv.Atoi(p)
	if err != nil || host == "" || perr != nil || pn < 1 || pn > 65535 || !digits(p) {
		return "", 0, false
	}
	return host, pn, true
}
