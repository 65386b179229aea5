package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/internal/fsx"
	"gopkg.in/yaml.v3"
)

// DefaultFile is read from the working directory when no --config or
// BG_CONFIG names a file.
const DefaultFile = "bluegreen.yml"

// Source says where to look for a config and how to build the default one.
type Source struct {
	// Path given by --config; "" to fall back to BG_CONFIG, then DefaultFile.
	Path string
	// Getenv reads overrides (BG_CONFIG, BLUE_PORT, GREEN_PORT, BG_STATE_FILE,
	// BG_PROXY_PORT). Default os.Getenv.
	Getenv func(string) string
	// Self is the bgd binary, the command of the embedded default's demo app.
	Self string
}

// Load finds, parses, completes and validates the configuration. Errors wrap
// ErrInvalid and name the file, and the key and line where there is one.
func Load(src Source) (*Config, error) {
	getenv := src.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	path, explicit := src.Path, src.Path != ""
	if path == "" {
		if p := getenv("BG_CONFIG"); p != "" {
			path, explicit = p, true
		} else {
			path = DefaultFile
		}
	}
	data, err := readFile(path)
	var cfg *Config
	switch {
	case err == nil:
		cfg, err = parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		cfg.Path = path
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		cfg = Default(src.Self)
	case errors.Is(err, ErrInvalid):
		return nil, err
	default:
		return nil, invalidf("cannot read config file: %v", err)
	}
	for name, svc := range cfg.Services {
		svc.Name = name
	}
	if err := cfg.applyEnv(getenv); err != nil {
		return nil, err
	}
	cfg.fillDefaults()
	if err := cfg.Validate(); err != nil {
		if cfg.Path != "" {
			return nil, fmt.Errorf("%s: %w", cfg.Path, err)
		}
		return nil, err
	}
	return cfg, nil
}

// Default is the configuration used when there is no file: service "app",
// bgd's demo app on 5005/5006, behind the builtin proxy on 127.0.0.1:5004.
func Default(self string) *Config {
	return &Config{Services: map[string]*Service{
		"app": {
			Command:  []string{self, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"},
			Blue:     Slot{Port: 5005},
			Green:    Slot{Port: 5006},
			embedded: true,
		},
	}}
}

// MaxFileSize caps a config file: a bluegreen.yml is a few kilobytes, and
// reading /dev/zero or a runaway generated file must fail fast.
const MaxFileSize = 1 << 20

// readFile reads a config file of at most MaxFileSize bytes: anything but a
// regular file (a FIFO, a device such as /dev/zero, a directory) is refused
// before it is read, without ever blocking (see fsx.ReadRegular).
func readFile(path string) ([]byte, error) {
	data, err := fsx.ReadRegular(path, MaxFileSize)
	var nr *fsx.NotRegularError
	var tl *fsx.TooLargeError
	switch {
	case errors.As(err, &nr):
		return nil, invalidf("config %s is %s, not a regular file: give the path of a YAML file", path, fsx.Kind(nr.Mode))
	case errors.As(err, &tl) && tl.Size > 0:
		return nil, invalidf("config %s is larger than 1 MiB (%d bytes): is it the right file?", path, tl.Size)
	case errors.As(err, &tl):
		return nil, invalidf("config %s is larger than 1 MiB: is it the right file?", path)
	}
	return data, err
}

var (
	unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)
	yamlPrefix   = regexp.MustCompile(`^yaml: (unmarshal errors:\n\s*)?`)
)

// parse decodes YAML strictly: an unknown key is an error naming it and its line.
func parse(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, invalidf("the file is empty")
		}
		msg := yamlPrefix.ReplaceAllString(err.Error(), "")
		msg = unknownField.ReplaceAllString(msg, `line $1: unknown key "$2"`)
		msg = strings.ReplaceAll(msg, "\n  ", "; ")
		if strings.Contains(msg, "excessive aliasing") {
			msg += ": YAML aliases (*name) expand to too much; write the values out"
		}
		return nil, invalidf("%s", msg)
	}
	// A second document with content (a file concatenated to another)
	// would be ignored silently: refuse it. Empty ones (a trailing ---) are
	// harmless.
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalidf("after the first YAML document: %s", yamlPrefix.ReplaceAllString(err.Error(), ""))
		}
		if c := next.Content; len(c) > 0 && !(len(c) == 1 && c[0].ShortTag() == "!!null") {
			return nil, invalidf("line %d: a second YAML document, which bgd would ignore: merge its settings into the first and remove the --- separator", c[0].Line)
		}
	}
	for name, svc := range cfg.Services {
		if svc == nil {
			return nil, invalidf("service %q is empty", name)
		}
		svc.Name = name
	}
	markGiven(data, &cfg)
	return &cfg, nil
}

// givenDurations mirrors the duration keys of a service with nodes, so that a
// second, lenient decode tells a key written as 0 from a key left out (the
// Duration alone cannot), aliases and merge keys included.
type givenDurations struct {
	Services map[string]*struct {
		StopGrace     yaml.Node `yaml:"stop_grace"`
		DrainTimeout  yaml.Node `yaml:"drain_timeout"`
		FailoverAfter yaml.Node `yaml:"failover_after"`
		Health        struct {
			Interval       yaml.Node `yaml:"interval"`
			Timeout        yaml.Node `yaml:"timeout"`
			RequestTimeout yaml.Node `yaml:"request_timeout"`
			MaxRestarts    yaml.Node `yaml:"max_restarts"`
			RestartWindow  yaml.Node `yaml:"restart_window"`
		} `yaml:"health"`
	} `yaml:"services"`
}

// markGiven records in each service which duration keys the file sets (to
// a non-null value) and on which line. The strict decode has already
// succeeded, so this one cannot meet a new error.
func markGiven(data []byte, cfg *Config) {
	var g givenDurations
	if err := yaml.Unmarshal(data, &g); err != nil {
		return
	}
	for name, gs := range g.Services {
		s := cfg.Services[name]
		if gs == nil || s == nil {
			continue
		}
		for key, n := range map[string]*yaml.Node{
			"stop_grace":             &gs.StopGrace,
			"drain_timeout":          &gs.DrainTimeout,
			"failover_after":         &gs.FailoverAfter,
			"health.interval":        &gs.Health.Interval,
			"health.timeout":         &gs.Health.Timeout,
			"health.request_timeout": &gs.Health.RequestTimeout,
			"health.max_restarts":    &gs.Health.MaxRestarts,
			"health.restart_window":  &gs.Health.RestartWindow,
		} {
			if n.Kind == 0 {
				continue
			}
			line := n.Line
			for n.Kind == yaml.AliasNode && n.Alias != nil {
				n = n.Alias
			}
			if n.ShortTag() == "!!null" {
				continue
			}
			if s.given == nil {
				s.given = map[string]int{}
			}
			s.given[key] = line
		}
	}
}

// UnmarshalYAML reads "1s"-style durations and names the line of a bad one.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: invalid duration %q (want e.g. 500ms, 2s, 1m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

func (c *Config) applyEnv(getenv func(string) string) error {
	for _, o := range []struct {
		env   string
		color Color
	}{{"BLUE_PORT", Blue}, {"GREEN_PORT", Green}} {
		v := getenv(o.env)
		if v == "" {
			continue
		}
		p, err := envPort(o.env, v, o.color.String()+" port")
		if err != nil {
			return err
		}
		if len(c.Services) > 1 {
			return invalidf("%s is set, but %d services are configured: it applies to a single service only; set the ports in the config file", o.env, len(c.Services))
		}
		for _, s := range c.Services {
			if o.color == Blue {
				s.Blue.Port = p
			} else {
				s.Green.Port = p
			}
		}
	}
	if v := getenv("BG_PROXY_PORT"); v != "" {
		p, err := envPort("BG_PROXY_PORT", v, "proxy port")
		if err != nil {
			return err
		}
		for _, s := range c.Services {
			host := "127.0.0.1"
			if h, _, err := net.SplitHostPort(s.LB.Builtin.Listen); err == nil {
				host = h
			}
			s.LB.Builtin.Listen = net.JoinHostPort(host, strconv.Itoa(p))
		}
	}
	if v := getenv("BG_STATE_FILE"); v != "" {
		c.StateFile = v
	}
	return nil
}

// envPort parses a port given in the environment: decimal digits only
// (no sign, no spaces), 1-65535, the variable named in the error.
func envPort(name, v, what string) (int, error) {
	p, err := strconv.Atoi(v)
	if err != nil || !digits(v) {
		return 0, invalidf("%s=%q is not a port number", name, v)
	}
	if p < 1 || p > 65535 {
		return 0, invalidf("%s=%s: %s %d is out of range 1-65535", name, v, what, p)
	}
	return p, nil
}

// fillDefaults gives every setting the file left out its default.
func (c *Config) fillDefaults() {
	c.StateDir = cmp.Or(c.StateDir, ".local_context")
	c.State.fillDefaults()
	for name, s := range c.Services {
		s.fillDefaults(c.Runner)
		s.LB.fillDefaults(name, s.embedded)
	}
}

// fillDefaults gives the service's health checks, timings and runner
// their defaults; runner is the file's top-level one.
func (s *Service) fillDefaults(runner string) {
	h := &s.Health
	h.Path = cmp.Or(h.Path, "/health")
	s.setDur("health.interval", &h.Interval, time.Second)
	s.setDur("health.timeout", &h.Timeout, 30*time.Second)
	s.setDur("health.request_timeout", &h.RequestTimeout, 2*time.Second)
	s.setDur("health.restart_window", &h.RestartWindow, 10*time.Minute)
	s.setDur("stop_grace", &s.StopGrace, 10*time.Second)
	s.setDur("drain_timeout", &s.DrainTimeout, 30*time.Second)
	s.PauseTimeout = cmp.Or(s.PauseTimeout, Duration(30*time.Second))
	s.Analysis.Interval = cmp.Or(s.Analysis.Interval, Duration(time.Second))
	s.Analysis.MinRequests = cmp.Or(s.Analysis.MinRequests, 50)
	if _, given := s.given["health.max_restarts"]; !given {
		h.MaxRestarts = 3
	}
	if _, given := s.given["failover_after"]; !given {
		s.FailoverAfter = 3
	}
	s.Runner = cmp.Or(s.Runner, runner, RunnerProcess)
}

// fillDefaults gives every driver's settings of the service name their
// defaults (the drivers not chosen too: status and render show them); an
// embedded config's builtin proxy serves its admin API on its own port.
func (l *LB) fillDefaults(name string, embedded bool) {
	l.Driver = cmp.Or(l.Driver, "builtin")
	b := &l.Builtin
	b.Listen = cmp.Or(b.Listen, "127.0.0.1:5004")
	if embedded {
		b.AdminListen = cmp.Or(b.AdminListen, b.Listen)
	}
	n := &l.Nginx
	n.File = cmp.Or(n.File, "/etc/nginx/conf.d/bgd-"+name+".conf")
	n.Listen = cmp.Or(n.Listen, "80")
	if len(n.Test) == 0 {
		n.Test = []string{"nginx", "-t"}
	}
	if len(n.Reload) == 0 {
		n.Reload = []string{"nginx", "-s", "reload"}
	}
	n.VerifyURL = cmp.Or(n.VerifyURL, verifyURL(n.Listen))
	n.Mode = cmp.Or(n.Mode, NginxReload)
	n.LuaModule = cmp.Or(n.LuaModule, DefaultLuaModule)
	hp := &l.HAProxy
	hp.Socket = cmp.Or(hp.Socket, "/run/haproxy/admin.sock")
	hp.MapFile = cmp.Or(hp.MapFile, "/etc/haproxy/bgd.map")
	hp.Listen = cmp.Or(hp.Listen, "80")
	if hp.Backends == nil {
		hp.Backends = map[Color]string{}
	}
	for _, col := range Colors {
		hp.Backends[col] = cmp.Or(hp.Backends[col], name+"_"+col.String())
	}
	hp.SplitBackend = cmp.Or(hp.SplitBackend, name+"_split")
}

// verifyURL is where nginx's server on listen answers from this host: the
// listen address itself, or loopback when it listens on every address.
func verifyURL(listen string) string {
	host, port := "127.0.0.1", listen
	if i := strings.LastIndex(listen, ":"); i >= 0 {
		host, port = listen[:i], listen[i+1:]
		switch host {
		case "", "*", "0.0.0.0":
			host = "127.0.0.1"
		case "[::]":
			host = "[::1]"
		}
	}
	return "http://" + host + ":" + port + "/"
}

// setDur gives d its default when the file left key out. A key written as 0
// keeps 0: validation refuses it where 0 makes no sense, and stop_grace 0
// means what it says.
func (s *Service) setDur(key string, d *Duration, def time.Duration) {
	if _, given := s.given[key]; *d == 0 && !given {
		*d = Duration(def)
	}
}

// ServiceNames returns the service names, sorted.
func (c *Config) ServiceNames() []string {
	names := make([]string, 0, len(c.Services))
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Service returns the named service, or the only one when name is "".
func (c *Config) Service(name string) (*Service, error) {
	if name == "" {
		if len(c.Services) == 1 {
			for _, s := range c.Services {
				return s, nil
			}
		}
		return nil, invalidf("several services are configured (%s): choose one with --service",
			strings.Join(c.ServiceNames(), ", "))
	}
	s, ok := c.Services[name]
	if !ok {
		return nil, invalidf("unknown service %q (configured: %s)", name, strings.Join(c.ServiceNames(), ", "))
	}
	return s, nil
}

// StatePath is the state file of the service: BG_STATE_FILE or --state-file
// when set, <state_dir>/bg_state.json for a single service (the seed's path),
// <state_dir>/<service>.json when there are several.
func (c *Config) StatePath(service string) string {
	if len(c.Services) <= 1 {
		if c.StateFile != "" {
			return c.StateFile
		}
		return filepath.Join(c.StateDir, "bg_state.json")
	}
	return filepath.Join(c.StateDir, service+".json")
}

// AdminListen is where the builtin proxy of service serves its admin
// endpoints: lb.builtin.admin_listen, or by default the unix socket
// <service>.admin.sock beside the state file ("unix:<path>"). It follows
// the state file, which --state-file may set after Load.
func (c *Config) AdminListen(service string) string {
	if s := c.Services[service]; s != nil && s.LB.Builtin.AdminListen != "" {
		b := s.LB.Builtin
		if sameHostPort(b.AdminListen, b.Listen) {
			return b.Listen // the proxy's own listener, however it is spelt
		}
		return b.AdminListen
	}
	return "unix:" + filepath.Join(filepath.Dir(c.StatePath(service)), service+".admin.sock")
}

// LogPath is where the slot's stdout and stderr go.
func (c *Config) LogPath(service string, color Color) string {
	return filepath.Join(filepath.Dir(c.StatePath(service)), "logs", service+"-"+color.String()+".log")
}

// sameHostPort reports whether a and b are one TCP address: the same port
// and the same host, once normalised (":80" and "0.0.0.0:80" are one).
func sameHostPort(a, b string) bool {
	ah, ap, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	bh, bp, err := net.SplitHostPort(b)
	if err != nil || normHost(ah) != normHost(bh) {
		return false
	}
	an, aerr := strconv.Atoi(ap)
	bn, berr := strconv.Atoi(bp)
	return aerr == nil && berr == nil && an == bn
}
