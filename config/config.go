// Package config loads bluegreen.yml: strict YAML decoding (an unknown key
// is an error naming it and its line), defaults, environment overrides and
// validation. With no file at all it returns the embedded default: one
// service "app" running bgd's own demo app behind the builtin proxy.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrInvalid marks every configuration error; the CLI maps it to exit 2.
var ErrInvalid = errors.New("invalid configuration")

// Color names one of the two slots of a service: Blue or Green. It is a
// string type, so it marshals (JSON, YAML, text templates) as the name.
type Color string

// The two colours.
const (
	Blue  Color = "blue"
	Green Color = "green"
)

// Colors are the two slots of every service, in display order.
var Colors = []Color{Blue, Green}

// Other returns the colour that is not c (Blue for Green, Green otherwise).
func (c Color) Other() Color {
	if c == Green {
		return Blue
	}
	return Green
}

// Valid reports whether c is Blue or Green.
func (c Color) Valid() bool { return c == Blue || c == Green }

func (c Color) String() string { return string(c) }

// Config is a whole bluegreen.yml.
type Config struct {
	// StateDir holds state files and slot logs. Default ".local_context".
	StateDir string `yaml:"state_dir"`
	// Services by name. The embedded default has one, "app".
	Services map[string]*Service `yaml:"services"`
	// Runner is the default of every service's runner. Default "process".
	Runner string `yaml:"runner"`
	// Metrics is where bgd leaves its Prometheus metrics.
	Metrics Metrics `yaml:"metrics"`
	// State is where services' states and locks live: files (default) or
	// etcd, for several load-balancer hosts.
	State StateBackend `yaml:"state"`

	// Path is the file the config came from; "" for the embedded default.
	Path string `yaml:"-"`
	// StateFile overrides the single-service state path (env BG_STATE_FILE,
	// flag --state-file). Default "" (derived from StateDir).
	StateFile string `yaml:"-"`
}

// Metrics is the top-level metrics: section.
type Metrics struct {
	// TextfileDir is node_exporter's textfile collector directory
	// (--collector.textfile.directory, e.g.
	// /var/lib/prometheus/node-exporter): after every command that changes
	// or checks a service, bgd replaces <dir>/bgd_<service>.prom there.
	// Default "": no file.
	TextfileDir string `yaml:"textfile_dir"`
}

// Service is one blue/green pair and the load balancer in front of it.
type Service struct {
	// Name is the key under services:, filled in by Load.
	Name string `yaml:"-"`
	// Command is the slot's argv, never run through a shell. Each element is
	// a text/template with {{.Port}}, {{.Color}} and {{.Release}}. Required.
	// Load executes every template with sample values for both colours (a
	// misspelt field such as {{.Prot}} is refused) and checks command[0]:
	// without a slash it must be on PATH, with one it must be an executable
	// file (relative to Workdir). When command[0] is a template, or is
	// relative and Workdir is a template, the check is left to the slot's
	// start: its path depends on the release (releases/{{.Release}}/...),
	// which may not be unpacked yet.
	Command []string `yaml:"command"`
	// Workdir is the slot's working directory (a template too). Default:
	// bgd's. Without a template it must be an existing directory at load.
	Workdir string `yaml:"workdir"`
	// Env is added to bgd's environment; PORT, BG_COLOR, BG_RELEASE are
	// always set by bgd and may not appear here. Keys are non-empty, without
	// '=' or NUL; values hold no NUL and are templates like Command's
	// ({{.Port}}, {{.Color}}, {{.Release}}), expanded when the slot starts.
	Env map[string]string `yaml:"env"`
	// Blue and Green hold each slot's port. Required in a file (the
	// embedded default uses 5005 and 5006).
	Blue  Slot `yaml:"blue"`
	Green Slot `yaml:"green"`
	// Health says how a slot is probed.
	Health Health `yaml:"health"`
	// StopGrace is the wait between SIGTERM and SIGKILL. Default 10s (when
	// the key is left out). 0s means no grace at all: SIGKILL follows
	// SIGTERM at once, for a slot that holds nothing worth draining.
	StopGrace Duration `yaml:"stop_grace"`
	// DrainTimeout bounds the wait, before bgd stops a slot that served
	// traffic until the last flip, for the load balancer to report no
	// request in flight to it. Default 30s (when the key is left out). 0s
	// means no drain: the slot is stopped at once.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// Failover lets a health sweep switch to a healthy standby when the
	// active slot is down. Default false.
	Failover bool `yaml:"failover"`
	// FailoverAfter is how many consecutive health sweeps must find the
	// active slot failing its probe before one fails over (each sweep is
	// one probe; a passing probe starts the count again). Default 3 when
	// left out; at least 1 (1: the first failed probe fails over). Used
	// only with Failover.
	FailoverAfter int `yaml:"failover_after"`
	// PauseTimeout bounds a pause (bgd pause): the load balancer releases
	// held requests by itself once it has passed. Default 30s; bgd pause
	// --timeout overrides it.
	PauseTimeout Duration `yaml:"pause_timeout"`
	// MaintenancePage is an HTML file answered (with 503 and Retry-After)
	// to every request while the service is in maintenance (bgd
	// maintenance on); "" (default): the load balancer's own short text.
	// bgd maintenance on --page overrides it.
	MaintenancePage string `yaml:"maintenance_page"`
	// LB selects and configures the load balancer driver.
	LB LB `yaml:"lb"`
	// Canary configures weighted splits (bgd deploy --canary, bgd canary).
	Canary Canary `yaml:"canary"`
	// Analysis judges a new release by what the load balancer sees of it
	// after a deploy's flip and between canary steps, and rolls it back
	// when a threshold is crossed.
	Analysis Analysis `yaml:"analysis"`
	// Runner runs the slots: "process" (a detached process group bgd
	// starts and signals itself) or "systemd" (a transient unit
	// bgd-slot-<service>-<colour>.service per slot, started with
	// systemd-run, Restart=on-failure). Default: the top-level runner,
	// else "process". systemd must be PID 1 (/run/systemd/system) when a
	// command needs the runner; loading the config does not check it.
	Runner string `yaml:"runner"`

	// embedded marks the service of the embedded default (no config file),
	// whose admin endpoints stay on the proxy's own port.
	embedded bool
	// given holds the duration keys the file sets (even to 0), with their
	// lines: a Duration alone cannot tell 0 from unset.
	given map[string]int
}

// Slot is one colour's settings.
type Slot struct {
	// Port the slot listens on. Required, 1-65535.
	Port int `yaml:"port"`
	// Host is where the load balancers and the health checks reach the
	// slot: a host name, an IPv4 address or a bracketed IPv6 address.
	// Default 127.0.0.1. bgd starts the slot on the host it runs on, so
	// another host fits an app host where the operator runs bgd while the
	// load balancers run elsewhere (the etcd backend and `bgd agent`).
	Host string `yaml:"host"`
}

// Health configures probing of a slot.
type Health struct {
	// Path probed with GET. Default "/health".
	Path string `yaml:"path"`
	// Interval between probes once the fast first probes are done. Default
	// 1s when left out; at least 1ms (0 is refused: it would mean probing
	// without pause).
	Interval Duration `yaml:"interval"`
	// Timeout is how long a starting slot may take to become healthy.
	// Default 30s when left out; at least 1ms (0 is refused: no slot could
	// ever become healthy).
	Timeout Duration `yaml:"timeout"`
	// RequestTimeout bounds one probe. Default 2s when left out; at least
	// 1ms (0 is refused: every probe would fail).
	RequestTimeout Duration `yaml:"request_timeout"`
	// ExpectStatus is the status a healthy slot answers. Default 0: any 2xx.
	ExpectStatus int `yaml:"expect_status"`
	// MaxRestarts bounds how many times health sweeps restart a slot that
	// should run and does not, within RestartWindow; past it the sweep
	// reports a crash loop instead. Default 3 when left out; 0: sweeps
	// never restart a slot.
	MaxRestarts int `yaml:"max_restarts"`
	// RestartWindow is the period MaxRestarts counts over, from the first
	// restart. Default 10m when left out; at least 1ms.
	RestartWindow Duration `yaml:"restart_window"`
	// Smoke are paths (each starting with '/') that bgd GETs through the
	// load balancer's preview route, on the standby slot, before a flip to
	// it (deploy, switch, promote, a canary's first weight): each must
	// answer 2xx from that slot, or the flip is refused. Default none.
	Smoke []string `yaml:"smoke"`
}

// Canary configures a service's canaries: the standby slot getting a
// percentage of new requests before the flip is promoted or aborted.
type Canary struct {
	// Sticky keeps each client on the side that first answered it while
	// the split lasts (a cookie bgd_<service> set by the load balancer).
	// Default false: every new request is split by the weights.
	Sticky bool `yaml:"sticky"`
}

// Analysis is how bgd judges a new release from the load balancer's counts
// of its answers (lb.Observer): every Interval for Window after a deploy's
// flip (and during each canary step), the new slot's answers since the flip
// are compared with the thresholds; once MinRequests have been answered, an
// error rate above MaxErrorRate, or a latency above MaxP99 or above
// MaxP99Ratio times the old slot's, rolls the release back by itself.
type Analysis struct {
	// Window is how long a deploy stays attached after its flip, watching
	// the new slot. Default 0: no analysis (bgd deploy --watch D asks for
	// one deploy).
	Window Duration `yaml:"window"`
	// Interval between two looks at the load balancer's counts. Default 1s
	// (when 0); at least 10ms.
	Interval Duration `yaml:"interval"`
	// MaxErrorRate is the highest tolerated share (0-1) of the new slot's
	// requests answered 5xx or not at all. Default 0.01 when left out; 0
	// tolerates no error.
	MaxErrorRate *float64 `yaml:"max_error_rate"`
	// MaxP99 is the highest tolerated latency (the 99th percentile where
	// the driver has a histogram, its mean otherwise: HAProxy). Default 0:
	// not judged.
	MaxP99 Duration `yaml:"max_p99"`
	// MaxP99Ratio is the highest tolerated ratio of that latency to the old
	// slot's (at least 1). Default 0: not judged.
	MaxP99Ratio float64 `yaml:"max_p99_ratio"`
	// MinRequests is how many requests the new slot must have answered
	// before it is judged at all. Default 50 (when 0).
	MinRequests int `yaml:"min_requests"`
}

// ErrorRate is MaxErrorRate with its default (0.01) when left out.
func (a Analysis) ErrorRate() float64 {
	if a.MaxErrorRate == nil {
		return 0.01
	}
	return *a.MaxErrorRate
}

// LB selects the driver and holds each driver's settings.
type LB struct {
	// Driver is builtin, nginx or haproxy. Default builtin.
	Driver  string  `yaml:"driver"`
	Builtin Builtin `yaml:"builtin"`
	Nginx   Nginx   `yaml:"nginx"`
	HAProxy HAProxy `yaml:"haproxy"`
}

// Builtin configures `bgd proxy`.
type Builtin struct {
	// Listen is the proxy's address. Default "127.0.0.1:5004" (env BG_PROXY_PORT
	// replaces the port). It may not overlap another service's listen or any
	// slot port: ":p", "0.0.0.0:p" and "[::]:p" overlap everything on port
	// p, "localhost:p" overlaps 127.0.0.1 and ::1; slot ports are taken on
	// every address.
	Listen string `yaml:"listen"`
	// AdminListen is where the proxy serves its admin endpoints (/metrics,
	// /monitoring, /_bgd/route and every /_bgd/ path); on Listen every path
	// then reaches the app. It is a unix socket, "unix:<path>" (or an
	// absolute path; a relative one is taken from bgd's working directory,
	// like state_dir), made mode 0600; a loopback "host:port", whose
	// endpoints answer loopback clients only; or Listen itself, where the
	// admin paths shadow the app's (loopback clients only, as on the admin
	// port). Default: "unix:<state dir>/<service>.admin.sock" (the
	// directory of the state file), which no port can collide with; for
	// the embedded default (no config file) it is Listen, so that
	// :5004/metrics and :5004/monitoring answer as they always did (the
	// demo app has no such paths). Config.AdminListen resolves it.
	AdminListen string `yaml:"admin_listen"`
}

// AdminSocket splits an admin address (Builtin.AdminListen): a unix socket
// ("unix:<path>", or a path starting with "/") gives its path and true; a
// host:port gives "" and false.
func AdminSocket(addr string) (path string, ok bool) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return p, true
	}
	if strings.HasPrefix(addr, "/") {
		return addr, true
	}
	return "", false
}

// Nginx configures the nginx driver.
type Nginx struct {
	// File is the one file bgd owns and rewrites. Default /etc/nginx/conf.d/bgd-<service>.conf.
	File string `yaml:"file"`
	// Listen is what the default template's server listens on. Default "80".
	// Services may share an nginx address only when each has its own
	// Template (telling them apart by server_name); the default template
	// would send all of it to one service.
	Listen string `yaml:"listen"`
	// Template is a path to the user's template; "" for the embedded default.
	Template string `yaml:"template"`
	// Test validates the configuration. Default ["nginx", "-t"]. With the
	// nginx driver, argv[0] must be on PATH (or an executable path) at load.
	Test []string `yaml:"test"`
	// Reload makes nginx load it. Default ["nginx", "-s", "reload"]; argv[0]
	// is checked like Test's.
	Reload []string `yaml:"reload"`
	// VerifyURL is probed after a reload until the new generation answers.
	// Default "http://127.0.0.1:<listen port>/".
	VerifyURL string `yaml:"verify_url"`
	// AccessLog, when set, is an absolute path where the default template
	// has nginx log each request's upstream address, status and time as
	// JSON: what bgd's analysis reads (analysis:, deploy --watch). Default
	// "": no such log, and no analysis with nginx.
	AccessLog string `yaml:"access_log"`
	// Mode is how a flip reaches nginx: "reload" (the default) renders the
	// file, tests it and reloads nginx on every flip; "runtime" renders
	// the file once (a Lua balancer, nginx's ngx_http_lua_module) and
	// flips with one HTTP call to a loopback-only location, without a
	// reload.
	Mode string `yaml:"mode"`
	// LuaModule is the nginx Lua module's file that mode runtime needs
	// (nginx must load it, with load_module, in its main context). Default
	// /usr/lib/nginx/modules/ngx_http_lua_module.so (Debian's
	// libnginx-mod-http-lua). Ignored in mode reload.
	LuaModule string `yaml:"lua_module"`
}

// The values of lb.nginx.mode.
const (
	NginxReload  = "reload"
	NginxRuntime = "runtime"
)

// DefaultLuaModule is where Debian's libnginx-mod-http-lua installs nginx's
// Lua module.
const DefaultLuaModule = "/usr/lib/nginx/modules/ngx_http_lua_module.so"

// HAProxy configures the HAProxy driver.
type HAProxy struct {
	// Socket is the admin socket: a path, or "tcp://host:port". Default /run/haproxy/admin.sock.
	Socket string `yaml:"socket"`
	// MapFile is the map HAProxy loaded; key: service name, value: backend.
	// Default /etc/haproxy/bgd.map.
	MapFile string `yaml:"map_file"`
	// Backends names the backend of each colour. Default <service>_blue, <service>_green.
	Backends map[Color]string `yaml:"backends"`
	// SplitBackend is the backend a canary routes to: it holds both
	// colours' servers (named blue and green), whose weights bgd sets at
	// runtime. Default <service>_split. Only a canary needs it in HAProxy's
	// configuration (bgd render prints it).
	SplitBackend string `yaml:"split_backend"`
	// Listen is what the rendered snippet's frontend binds: a port or
	// address:port. Default "80". Only `bgd render` uses it (bgd never
	// edits HAProxy's configuration).
	Listen string `yaml:"listen"`
	// Template is a path to the user's own snippet template; "" for the
	// embedded default. Only `bgd render` uses it.
	Template string `yaml:"template"`
}

// The runners (Service.Runner).
const (
	RunnerProcess = "process"
	RunnerSystemd = "systemd"
)

// Port returns the port of the given colour.
func (s *Service) Port(color Color) int {
	if color == Green {
		return s.Green.Port
	}
	return s.Blue.Port
}

// Duration is a time.Duration written as "1s", "250ms" in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration back in its readable form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
