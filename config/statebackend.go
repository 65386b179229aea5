package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// The state backends (state.backend).
const (
	// BackendFile is the default: one JSON file per service under
	// state_dir, locked with flock(2). One load-balancer host.
	BackendFile = "file"
	// BackendEtcd keeps each service's state and lock in etcd, so that
	// several load-balancer hosts, each running `bgd agent`, route to the
	// same colour.
	BackendEtcd = "etcd"
)

// StateBackend is the top-level state: section: where services' states
// and locks live.
type StateBackend struct {
	// Backend is "file" (default) or "etcd".
	Backend string `yaml:"backend"`
	// Endpoints are etcd's client URLs, e.g. http://etcd1:2379. Required
	// with the etcd backend.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the root of bgd's keys in etcd. Default "/bgd".
	Prefix string `yaml:"prefix"`
	// DialTimeout bounds connecting to etcd and each request to it.
	// Default 5s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// Username and PasswordFile (a file holding the password, so that it
	// stays out of the config) authenticate to etcd. Default: none.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// CAFile verifies etcd's certificate (https endpoints); CertFile and
	// KeyFile are a client certificate. Default: none (the system's CAs).
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// LeaseTTL is the lease of the operation lock and of each agent's
	// report: a holder or an agent that dies is gone after it. Default 5s,
	// at least 1s (etcd's leases count whole seconds).
	LeaseTTL Duration `yaml:"lease_ttl"`
	// AgentsTimeout is how long a command that changes the routing waits
	// for every agent to apply it. Default 10s.
	AgentsTimeout Duration `yaml:"agents_timeout"`
}

// Etcd reports whether the states live in etcd.
func (b StateBackend) Etcd() bool { return b.Backend == BackendEtcd }

func (b *StateBackend) fillDefaults() {
	if b.Backend == "" {
		b.Backend = BackendFile
	}
	if b.Prefix == "" {
		b.Prefix = "/bgd"
	}
	b.Prefix = "/" + strings.Trim(b.Prefix, "/")
	if b.DialTimeout == 0 {
		b.DialTimeout = Duration(5 * time.Second)
	}
	if b.LeaseTTL == 0 {
		b.LeaseTTL = Duration(5 * time.Second)
	}
	if b.AgentsTimeout == 0 {
		b.AgentsTimeout = Duration(10 * time.Second)
	}
}

// prefixPattern: key segments of letters, digits, '.', '_', '-'.
var prefixPattern = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`)

func (b *StateBackend) validate(add adder) {
	switch b.Backend {
	case BackendFile:
		if len(b.Endpoints) > 0 {
			add("state.endpoints is set but state.backend is %q: set state.backend: etcd to use etcd", b.Backend)
		}
		return
	case BackendEtcd:
	default:
		add("state.backend %q is unknown (use file or etcd)", b.Backend)
		return
	}
	if len(b.Endpoints) == 0 {
		add("state.backend is etcd but state.endpoints is empty: list etcd's client URLs, e.g. [http://etcd:2379]")
	}
	for _, e := range b.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			add("state.endpoints: %q is not an etcd client URL (want http://host:port or https://host:port)", e)
		}
	}
	if !prefixPattern.MatchString(b.Prefix) {
		add("state.prefix %q: use /-separated segments of letters, digits, '.', '_' or '-', e.g. /bgd", b.Prefix)
	}
	if b.LeaseTTL.D() < time.Second || b.LeaseTTL.D()%time.Second != 0 {
		add("state.lease_ttl %s: etcd leases count whole seconds: use 1s or more, in whole seconds", b.LeaseTTL.D())
	}
	if (b.CertFile == "") != (b.KeyFile == "") {
		add("state.cert_file and state.key_file go together: set both or neither")
	}
	if (b.Username == "") != (b.PasswordFile == "") {
		add("state.username and state.password_file go together: set both or neither")
	}
	if hasNUL(b.PasswordFile, b.CAFile, b.CertFile, b.KeyFile) {
		add("state: a file name contains a NUL byte, which no path can hold")
	}
}

// hostPattern is a host name: dot-separated labels of letters, digits and
// '-' (never first or last in a label).
var hostPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// Host is where the load balancers reach the slot of color: its host
// setting, default LocalHost.
func (s *Service) Host(color Color) string {
	h := s.Blue.Host
	if color == Green {
		h = s.Green.Host
	}
	if h == "" {
		return LocalHost
	}
	return h
}

// HostOfPort is the Host of the slot on port: a slot's state may hold the
// port it was started on only, so probes look its host up by port. A port
// of neither slot is on LocalHost.
func (s *Service) HostOfPort(port int) string {
	for _, c := range Colors {
		if s.Port(c) == port {
			return s.Host(c)
		}
	}
	return LocalHost
}

// LocalHost is where slots listen unless their host says otherwise.
const LocalHost = "127.0.0.1"

// validateHosts checks each slot's host: a host name, an IPv4 address or a
// bracketed IPv6 address, nothing that could inject into nginx or HAProxy
// syntax. A slot on another host is health-checked there; bgd still starts
// it on the host it runs on.
func (s *Service) validateHosts(name string, add adder) {
	for _, col := range Colors {
		h := s.Host(col)
		if h == LocalHost {
			continue
		}
		if ip, ok := strings.CutPrefix(h, "["); ok {
			if addr, ok := strings.CutSuffix(ip, "]"); ok && net.ParseIP(addr) != nil && strings.Contains(addr, ":") {
				continue
			}
		} else if net.ParseIP(h) != nil && !strings.Contains(h, ":") {
			continue
		} else if hostPattern.MatchString(h) && len(h) <= 253 {
			continue
		}
		add("service %q: %s.host %q is not a host name, an IPv4 address or a bracketed IPv6 address such as [::1]", name, col, h)
	}
	if s.LB.Driver == "builtin" && s.Host(Blue) != s.Host(Green) {
		add("service %q: blue.host %q and green.host %q differ: the builtin proxy dials both slots on one host", name, s.Host(Blue), s.Host(Green))
	}
}

// StateKey is where the etcd backend keeps service's state.
func (b StateBackend) StateKey(service string) string {
	return fmt.Sprintf("%s/%s/state", b.Prefix, service)
}
