package builtin

import (
	"bytes"
	"iter"
	"net/url"
)

// Reading a request head for the fast path (fastpath.go): which requests
// are plain, and what the fast path needs to know of them.

// reqHead is a plain request's head. Its slices alias the connection's
// read buffer: valid until the head is discarded from it.
type reqHead struct {
	raw     []byte // the whole head, through the blank line
	line    []byte // the request line, without its CRLF
	headers []byte // the header lines, each with its CRLF
	// isHead: the method is HEAD (the answer has no body).
	isHead bool
	// close: the client asked to close the connection after the answer.
	close bool
	// host is the Host header's value.
	host []byte
	// xff: the client sent X-Forwarded-For; teTrailers: "TE: trailers".
	xff, teTrailers bool
}

// parseHead reads raw (a request head through its blank line) into h and
// reports whether the request is plain: GET or HEAD over HTTP/1.1, an
// origin-form target of common characters that is not an admin path, one
// well-formed Host, well-formed header lines, and none of Content-Length,
// Transfer-Encoding, Upgrade, Expect, the preview header, or a Connection
// header with other options than keep-alive and close. Anything else is
// for net/http.
func parseHead(h *reqHead, raw []byte) bool {
	*h = reqHead{raw: raw}
	eol := bytes.Index(raw, crlf)
	h.line = raw[:eol]
	h.headers = raw[eol+2 : len(raw)-2]
	var target []byte
	switch {
	case bytes.HasPrefix(h.line, getSP):
		target = h.line[len(getSP):]
	case bytes.HasPrefix(h.line, headSP):
		target, h.isHead = h.line[len(headSP):], true
	default:
		return false
	}
	target, ok := bytes.CutSuffix(target, spHTTP11)
	if !ok || !plainTarget(target) {
		return false
	}
	hosts := 0
	for rest := h.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 1 || rest[i-1] != '\r' {
			return false
		}
		line := rest[:i-1]
		rest = rest[i+1:]
		name, value, ok := splitHeader(line)
		if !ok {
			return false
		}
		switch {
		case eqFold(name, "host"):
			hosts++
			h.host = value
			if !plainHost(value) {
				return false
			}
		case eqFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, comma) {
				switch tok = trimOWS(tok); {
				case eqFold(tok, "close"):
					h.close = true
				case eqFold(tok, "keep-alive"), len(tok) == 0:
				default:
					return false
				}
			}
		case eqFold(name, "te"):
			for tok := range bytes.SplitSeq(value, comma) {
				if eqFold(trimOWS(tok), "trailers") {
					h.teTrailers = true
				}
			}
		case eqFold(name, "x-forwarded-for"):
			h.xff = true
		case eqFold(name, "content-length"), eqFold(name, "transfer-encoding"), eqFold(name, "upgrade"),
			eqFold(name, "expect"), eqFold(name, "x-bgd-preview"):
			return false
		}
	}
	return hosts == 1
}

// values yields the values of h's headers named lower (a lower-case
// name), in order. Only for a head parseHead took: its lines are well formed.
func (h *reqHead) values(lower string) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for rest := h.headers; len(rest) > 0; {
			i := bytes.IndexByte(rest, '\n')
			line := rest[:i-1]
			rest = rest[i+1:]
			if name, value, _ := splitHeader(line); eqFold(name, lower) && !yield(value) {
				return
			}
		}
	}
}

var (
	crlf     = []byte("\r\n")
	comma    = []byte(",")
	getSP    = []byte("GET ")
	headSP   = []byte("HEAD ")
	spHTTP11 = []byte(" HTTP/1.1")
)

// plainTarget: an origin-form target ("/" and on) of characters that
// net/http would forward unchanged, with well-formed escapes and no
// semicolon in its query, whose path is not an admin path.
func plainTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	path, escaped := t, false
	for i := 0; i < len(t); i++ {
		b := t[i]
		switch {
		case b == '?' && len(path) == len(t):
			path = t[:i]
		case b == ';' && len(path) < len(t):
			// net/http's ReverseProxy drops query parameters with a
			// semicolon (Go 1.17 on): it judges them.
			return false
		case b == '%':
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
			escaped = escaped || len(path) == len(t)
		case !targetByte[b]:
			return false
		}
	}
	p := string(path)
	if escaped {
		var err error
		if p, err = url.PathUnescape(p); err != nil {
			return false
		}
	}
	return !isAdminPath(p)
}

// plainHost: a host[:port] of letters, digits, '.', '-', '_', ':', '[' and ']'.
func plainHost(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, b := range v {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
			b == '.' || b == '-' || b == '_' || b == ':' || b == '[' || b == ']') {
			return false
		}
	}
	return true
}

// splitHeader splits a header line into its name (a token) and its value
// without surrounding blanks; not ok when the line is malformed or its
// value holds a control character.
func splitHeader(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	name = line[:colon]
	for _, b := range name {
		if !tokenByte[b] {
			return nil, nil, false
		}
	}
	value = trimOWS(line[colon+1:])
	for _, b := range value {
		if b < ' ' && b != '\t' || b == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

// trimOWS trims the blanks HTTP allows around a field value or a list
// element: spaces and tabs (not every Unicode space, as net/http).
func trimOWS(b []byte) []byte { return bytes.Trim(b, " \t") }

// eqFold reports whether b equals lower, a lower-case ASCII string, in any case.
func eqFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func isHex(b byte) bool { return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F' }

var tokenByte, targetByte [256]bool

func init() {
	for b := range 256 {
		c := byte(b)
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		tokenByte[b] = alnum || bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
		// Unreserved, sub-delims, ':', '@', '/', '?' (RFC 3986): what
		// net/http's URL keeps as it is ('%' is checked apart).
		targetByte[b] = alnum || bytes.IndexByte([]byte("-._~!$&'()*+,;=:@/?"), c) >= 0
	}
}

// dropRequestHeader: a header of the client that is not forwarded.
func dropRequestHeader(name []byte) bool {
	switch len(name) {
	case 2:
		return eqFold(name, "te")
	case 7:
		return eqFold(name, "upgrade") || eqFold(name, "trailer")
	case 9:
		return eqFold(name, "forwarded")
	case 10:
		return eqFold(name, "connection") || eqFold(name, "keep-alive")
	case 12:
		return eqFold(name, "x-bgd-shadow")
	case 15:
		return eqFold(name, "x-forwarded-for")
	case 16:
		return eqFold(name, "proxy-connection") || eqFold(name, "x-forwarded-host")
	case 17:
		return eqFold(name, "transfer-encoding") || eqFold(name, "x-forwarded-proto")
	case 18:
		return eqFold(name, "proxy-authenticate")
	case 19:
		return eqFold(name, "proxy-authorization")
	}
	return false
}
