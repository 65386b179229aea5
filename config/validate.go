package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

// namePattern is what may reach nginx or HAProxy syntax (service and backend
// names): anything else could inject directives.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// Validate checks everything that would otherwise fail late or inject into
// load balancer syntax. All problems are reported at once.
func (c *Config) Validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if len(c.Services) == 0 {
		add("no services: add one under services:")
	}
	owner := map[int]string{}
	listens := map[string]string{}
	for _, name := range c.ServiceNames() {
		s := c.Services[name]
		if !namePattern.MatchString(name) {
			add("service name %q: use only letters, digits, '_', '.' and '-'", name)
		}
		if len(s.Command) == 0 || strings.TrimSpace(s.Command[0]) == "" {
			add("service %q: command is empty: give the slot's argv, e.g. [\"./bin/server\", \"--port\", \"{{.Port}}\"]", name)
		}
		for _, arg := range append(append([]string{}, s.Command...), s.Workdir) {
			if _, err := template.New("arg").Option("missingkey=error").Parse(arg); err != nil {
				add("service %q: command or workdir %q is not a valid template: %v", name, arg, err)
			}
		}
		for _, col := range Colors {
			p := s.Port(col)
			switch {
			case p < 1 || p > 65535:
				add("service %q: %s port %d is out of range 1-65535", name, col, p)
			case owner[p] != "":
				add("service %q: %s port %d is already used by %s", name, col, p, owner[p])
			default:
				owner[p] = fmt.Sprintf("service %q %s", name, col)
			}
		}
		if !strings.HasPrefix(s.Health.Path, "/") || strings.ContainsAny(s.Health.Path, " \t\r\n\"';{}") {
			add("service %q: health.path %q must start with / and contain no spaces, quotes, ';' or braces", name, s.Health.Path)
		}
		if st := s.Health.ExpectStatus; st != 0 && (st < 100 || st > 599) {
			add("service %q: health.expect_status %d is not an HTTP status", name, st)
		}
		switch s.LB.Driver {
		case "builtin":
			host, port, err := net.SplitHostPort(s.LB.Builtin.Listen)
			pn, perr := strconv.Atoi(port)
			switch {
			case err != nil || perr != nil || pn < 1 || pn > 65535:
				add("service %q: lb.builtin.listen %q is not host:port", name, s.LB.Builtin.Listen)
			case owner[pn] != "" && (host == "" || host == "127.0.0.1" || host == "0.0.0.0" || host == "localhost"):
				add("service %q: lb.builtin.listen port %d is already used by %s", name, pn, owner[pn])
			case listens[s.LB.Builtin.Listen] != "":
				add("service %q: lb.builtin.listen %s is already used by service %q", name, s.LB.Builtin.Listen, listens[s.LB.Builtin.Listen])
			default:
				listens[s.LB.Builtin.Listen] = name
			}
		case "nginx":
			n := s.LB.Nginx
			if msg := checkListen(n.Listen); msg != "" {
				add("service %q: lb.nginx.listen %q: %s", name, n.Listen, msg)
			}
			if n.File == "" || strings.ContainsAny(n.File, "\n\"';{}") || strings.HasSuffix(n.File, "/") {
				add("service %q: lb.nginx.file %q is not a usable path", name, n.File)
			}
			for _, c := range []struct {
				key  string
				argv []string
			}{{"test", n.Test}, {"reload", n.Reload}} {
				if len(c.argv) == 0 || strings.TrimSpace(c.argv[0]) == "" {
					add("service %q: lb.nginx.%s is empty: give an argv, e.g. [\"nginx\", \"-t\"]", name, c.key)
				}
			}
			if u, err := url.Parse(n.VerifyURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("service %q: lb.nginx.verify_url %q is not an http(s) URL", name, n.VerifyURL)
			}
		case "haproxy":
			h := s.LB.HAProxy
			if msg := checkListen(h.Listen); msg != "" {
				add("service %q: lb.haproxy.listen %q: %s", name, h.Listen, msg)
			}
			if strings.ContainsAny(h.Template, "\r\n") {
				add("service %q: lb.haproxy.template %q is not a usable path", name, h.Template)
			}
			for key := range h.Backends {
				if !ValidColor(key) {
					add("service %q: lb.haproxy.backends: unknown colour %q (use blue and green)", name, key)
				}
			}
			for _, col := range Colors {
				if b := h.Backends[col]; !namePattern.MatchString(b) {
					add("service %q: lb.haproxy.backends.%s %q: use only letters, digits, '_', '.' and '-'", name, col, b)
				}
			}
			if h.Backends["blue"] == h.Backends["green"] {
				add("service %q: lb.haproxy.backends: blue and green both name %q", name, h.Backends["blue"])
			}
			if strings.ContainsAny(h.MapFile, " \t\r\n\"';") {
				add("service %q: lb.haproxy.map_file %q must not contain spaces, quotes or ';'", name, h.MapFile)
			} else if strings.ContainsAny(h.MapFile, "#\\") || !filepath.IsAbs(h.MapFile) {
				add("service %q: lb.haproxy.map_file %q: give an absolute path without '#' or '\\', as HAProxy's map() names it", name, h.MapFile)
			}
			if addr, ok := strings.CutPrefix(h.Socket, "tcp://"); ok {
				if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
					add("service %q: lb.haproxy.socket %q: want tcp://host:port", name, h.Socket)
				}
			} else if p := strings.TrimPrefix(h.Socket, "unix://"); !filepath.IsAbs(p) || strings.ContainsAny(p, " \t\r\n\"';") {
				add("service %q: lb.haproxy.socket %q: want an absolute unix socket path or tcp://host:port", name, h.Socket)
			}
		default:
			add("service %q: lb.driver %q is unknown (use builtin, nginx or haproxy)", name, s.LB.Driver)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
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

// IsInvalid reports whether err is a configuration error.
func IsInvalid(err error) bool { return errors.Is(err, ErrInvalid) }
