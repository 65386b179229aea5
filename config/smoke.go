package config

import "strings"

// maxSmoke bounds health.smoke: each path is a request made before every
// flip, which a long list would delay.
const maxSmoke = 20

// validateSmoke refuses a health.smoke path that is not an absolute path
// of a URL (a '/' first, no spaces, control characters or fragment), and
// a list longer than maxSmoke.
func (s *Service) validateSmoke(name string, add adder) {
	if n := len(s.Health.Smoke); n > maxSmoke {
		add("service %q: health.smoke has %d paths: at most %d (each is a request before every flip)", name, n, maxSmoke)
	}
	for i, p := range s.Health.Smoke {
		switch {
		case !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//"):
			add("service %q: health.smoke[%d] %q must be a path starting with a single / (e.g. /api/ping)", name, i, p)
		case strings.ContainsFunc(p, func(c rune) bool { return c <= ' ' || c == 0x7f || c == '#' }):
			add("service %q: health.smoke[%d] %q must contain no spaces, control characters or '#'", name, i, p)
		}
	}
}
