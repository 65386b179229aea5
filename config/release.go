package config

import (
	"regexp"
)

// MaxRelease is the longest release name accepted.
const MaxRelease = 128

var releasePattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// CheckRelease refuses a release name that could select a directory outside
// the releases folder ("..", "a/b"), break a log line or a terminal
// (newline, ESC), or be absurdly long. Release names reach templates such
// as workdir: "releases/{{.Release}}", so only [A-Za-z0-9._-] is allowed,
// 1-128 characters, and never "." or "..". The error wraps ErrInvalid.
func CheckRelease(name string) error {
	switch {
	case name == "":
		return invalidf("release name is empty")
	case len(name) > MaxRelease:
		return invalidf("release name is %d bytes long: at most %d", len(name), MaxRelease)
	case name == "." || name == "..":
		return invalidf("release name %q would name a directory, not a release", name)
	case !releasePattern.MatchString(name):
		return invalidf("release name %q: use only letters, digits, '.', '_' and '-'", name)
	}
	return nil
}
