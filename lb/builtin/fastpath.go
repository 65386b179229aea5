package builtin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// The fast path (see front.go): a plain request forwarded as bytes.
//
// What it does is what Proxy.ServeHTTP does for the same request, with
// the same answers, headers, metrics, in-flight counts and logs:
//   - maintenance answers 503 with the page; a pause holds the request
//     until it ends (or the client leaves); the side is chosen as
//     upstream.choose says (a canary split, its sticky cookie); shadow
//     traffic gets its copy once the client has its answer;
//   - the request line and header lines go to the slot as the client sent
//     them, less the hop-by-hop ones (Connection, Keep-Alive, TE but
//     "TE: trailers", Upgrade, Proxy-*, ...), the client's Forwarded and
//     X-Forwarded-* (the X-Forwarded-For chain is kept and the client's
//     address appended; X-Forwarded-Host and -Proto are set) and
//     X-Bgd-Shadow;
//   - the answer's head comes back less its hop-by-hop headers (and those
//     its Connection header names), with X-Bgd-Slot set; 1xx answers but
//     100 go to the client as they come (103 Early Hints);
//   - the body is relayed as it arrives: each time the slot has nothing
//     more buffered, what was relayed is flushed to the client
//     (streaming answers); a chunked body is relayed chunk by chunk with
//     its trailers, a body delimited by the slot closing is sent chunked;
//   - a client that leaves while its request waits for the slot cuts the
//     slot's connection and counts as 499 (noticed within watchAfter);
//     a slot that fails before answering gives 502.
// The request's routing generation is the one it started with.

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
			if !plainHost(value) {
				return false
			}
		case eqFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, comma) {
				switch tok = bytes.TrimSpace(tok); {
				case eqFold(tok, "close"):
					h.close = true
				case eqFold(tok, "keep-alive"), len(tok) == 0:
				default:
					return false
				}
			}
		case eqFold(name, "te"):
			for tok := range bytes.SplitSeq(value, comma) {
				if eqFold(bytes.TrimSpace(tok), "trailers") {
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

var (
	crlf     = []byte("\r\n")
	comma    = []byte(",")
	getSP    = []byte("GET ")
	headSP   = []byte("HEAD ")
	spHTTP11 = []byte(" HTTP/1.1")
)

// plainTarget: an origin-form target ("/" and on) of characters that
// net/http would forward unchanged, with well-formed escapes, whose path
// is not an admin path.
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
	value = bytes.Trim(line[colon+1:], " \t")
	for _, b := range value {
		if b < ' ' && b != '\t' || b == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

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

// serveFast serves the plain request h of c as Proxy.ServeHTTP would:
// the maintenance answer, or else held while the proxy is paused, then
// forwarded to the side that the routing (upstream.choose) picks, and
// copied to the standby when shadow traffic is on. keep: c may serve
// another request. handoff: h is for net/http after all (it is unread).
func (p *Proxy) serveFast(c *frontConn, h *reqHead) (keep, handoff bool) {
	if m := p.maint.Load(); m != nil {
		return p.fastMaintenance(c, h, m), false
	}
	if g := p.gate.Load(); g != nil && !p.fastHold(c, g) {
		return false, false // the client left while held
	}
	u := p.route.Load()
	var cookie config.Color
	if u.sticky {
		cookie = stickyColor(h.cookies(), u.cookie)
	}
	s := u.choose(cookie)
	setCookie := ""
	if cookie == "" {
		setCookie = s.setCookie
	}
	var cp *shadowCapture
	if u.shadow != nil {
		// Shadow traffic copies the request as net/http reads it.
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(h.raw)))
		if err != nil {
			return false, true // net/http will judge it
		}
		r.RemoteAddr = c.conn.RemoteAddr().String()
		cp = p.capture(u, s, r)
	}
	start := time.Now()
	n := &p.inFlight[colorIndex(s.color)]
	n.Add(1)
	code, keep := p.forward(c, s, h, setCookie)
	p.metrics.observe(s.color, code, time.Since(start))
	n.Add(-1)
	cp.send(code)
	// The end of the answer leaves last, as with net/http's server: once
	// the client has it, the metrics, in-flight counts and shadow counts
	// say so.
	if c.bw.Flush() != nil {
		keep = false
	}
	return keep, false
}

// cookies are the values of h's Cookie headers.
func (h *reqHead) cookies() []string {
	var values []string
	for rest := h.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i-1]
		rest = rest[i+1:]
		if name, value, _ := splitHeader(line); eqFold(name, "cookie") {
			values = append(values, string(value))
		}
	}
	return values
}

// fastMaintenance answers h with the maintenance page (see
// Proxy.serveMaintenance); it reports whether c may serve another request.
func (p *Proxy) fastMaintenance(c *frontConn, h *reqHead, m *maintenance) bool {
	w := c.bw
	w.WriteString("HTTP/1.1 503 Service Unavailable\r\nContent-Type: ")
	w.WriteString(m.contentType)
	w.WriteString("\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(m.body)))
	w.WriteString("\r\nRetry-After: " + lb.MaintenanceRetryAfter + "\r\nCache-Control: no-store\r\n")
	if h.close {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if !h.isHead {
		w.Write(m.body)
	}
	c.br.Discard(len(h.raw))
	return w.Flush() == nil && !h.close
}

// fastHold holds the request while the pause g lasts (see Proxy.hold); it
// reports false when the client left meanwhile.
func (p *Proxy) fastHold(c *frontConn, g *gate) bool {
	p.held.Add(1)
	defer p.held.Add(-1)
	c.watch.start()
	defer c.watch.stop()
	select {
	case <-g.released:
		return true
	case <-c.watch.left:
		return false
	}
}

// forward sends h to s's slot (again on a new connection when a kept one
// turns out closed before any answer) and relays the answer.
func (p *Proxy) forward(c *frontConn, s *side, h *reqHead, setCookie string) (code int, keep bool) {
	c.watch.start()
	defer c.watch.stop()
	defer c.br.Discard(len(h.raw))
	for {
		kc, reused, err := s.trans.get(context.Background())
		if err == nil {
			c.watch.cut(kc.conn)
			var retry bool
			code, keep, retry, err = p.exchange(c, kc, s, h, setCookie)
			if err == nil {
				return code, keep
			}
			if reused && retry && !c.watch.gone.Load() {
				continue
			}
		}
		gone := c.watch.gone.Load()
		if gone {
			p.Logger.Debug("proxy client went away", "service", p.Service, "slot", s.color, "err", err)
		} else {
			p.Logger.Warn("proxy upstream error", "service", p.Service, "slot", s.color, "port", s.port, "err", err)
		}
		switch {
		case code != 0:
			// The answer had begun: the client gets a cut answer, as
			// net/http's server gives when a ReverseProxy aborts.
			return code, false
		case gone:
			return statusClientClosed, false
		}
		c.bw.WriteString("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n")
		if h.close {
			c.bw.WriteString("Connection: close\r\n")
		}
		c.bw.WriteString("\r\n")
		return http.StatusBadGateway, !h.close
	}
}

// exchange sends h on kc and relays the answer to c. retry: the slot sent
// nothing (the request may be sent again). code is the answer's status
// once its head was written to the client (0 before). On error kc is
// closed; on success it is kept or closed as the answer says.
func (p *Proxy) exchange(c *frontConn, kc *keptConn, s *side, h *reqHead, setCookie string) (code int, keep, retry bool, err error) {
	ok := false
	defer func() {
		if !ok {
			kc.conn.Close()
		}
	}()
	p.writeRequest(kc.bw, c, h)
	if err := kc.bw.Flush(); err != nil {
		return 0, false, true, err
	}
	if _, err := kc.br.Peek(1); err != nil {
		return 0, false, true, err
	}
	hb := headBufs.Get().(*[]byte)
	defer headBufs.Put(hb)
	var a answer
	for {
		if *hb, err = readResponseHead(kc.br, (*hb)[:0]); err != nil {
			return 0, false, false, err
		}
		if err = a.parse(*hb, h.isHead); err != nil {
			return 0, false, false, err
		}
		if a.code >= 200 {
			break
		}
		if a.code == 101 {
			return 0, false, false, errors.New("slot switched protocols without an upgrade request")
		}
		if a.code != 100 {
			a.writeHead(c.bw, s, "", false)
			if err := c.bw.Flush(); err != nil {
				c.watch.gone.Store(true)
				return 0, false, false, err
			}
		}
	}
	a.writeHead(c.bw, s, setCookie, h.close)
	code = a.code
	if err := a.relayBody(c, kc); err != nil {
		return code, false, false, err
	}
	ok = true
	if a.close || c.watch.gone.Load() {
		kc.conn.Close()
	} else {
		s.trans.put(kc)
	}
	return code, !h.close, false, nil
}

// writeRequest writes h as it goes to the slot.
func (p *Proxy) writeRequest(w *bufio.Writer, c *frontConn, h *reqHead) {
	w.Write(h.line)
	w.Write(crlf)
	userAgent := false
	for rest := h.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i+1]
		rest = rest[i+1:]
		name, value, _ := bytes.Cut(line, colon)
		if dropRequestHeader(name) {
			continue
		}
		if eqFold(name, "user-agent") {
			// net/http sends the first User-Agent, and none when it is empty.
			if userAgent || len(bytes.TrimSpace(value)) == 0 {
				continue
			}
			userAgent = true
		}
		w.Write(line)
	}
	if h.teTrailers {
		w.WriteString("Te: trailers\r\n")
	}
	w.WriteString("X-Forwarded-For: ")
	if h.xff {
		for rest := h.headers; len(rest) > 0; {
			i := bytes.IndexByte(rest, '\n')
			line := rest[:i-1]
			rest = rest[i+1:]
			if name, value, _ := splitHeader(line); eqFold(name, "x-forwarded-for") {
				w.Write(value)
				w.WriteString(", ")
			}
		}
	}
	w.Write(c.clientIP)
	w.WriteString("\r\nX-Forwarded-Host: ")
	for rest := h.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i-1]
		rest = rest[i+1:]
		if name, value, _ := splitHeader(line); eqFold(name, "host") {
			w.Write(value)
			break
		}
	}
	w.WriteString("\r\nX-Forwarded-Proto: http\r\n\r\n")
}

var colon = []byte(":")

// maxResponseHead bounds an answer's head, as net/http's Transport does.
const maxResponseHead = 1 << 20

var headBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// readResponseHead appends the next answer head of br (through its blank
// line) to buf.
func readResponseHead(br *bufio.Reader, buf []byte) ([]byte, error) {
	lineStart := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
		buf = append(buf, line...)
		if len(buf) > maxResponseHead {
			return buf, errors.New("slot's answer head too large")
		}
		if err == nil && lineStart && (len(line) == 2 && line[0] == '\r' || len(line) == 1) {
			return buf, nil
		}
		lineStart = err == nil
	}
}

// answer is an answer head of the slot, parsed.
type answer struct {
	head    []byte // status line and header lines, CRLF each, blank line
	status  []byte // "200 OK"
	code    int
	headers []byte
	// length: Content-Length, -1 if none; chunked; noBody (HEAD, 1xx,
	// 204, 304); close: the slot closes the connection after it.
	length         int64
	chunked, close bool
	noBody         bool
	// connNames are the header names the slot's Connection header makes
	// hop-by-hop.
	connNames [][]byte
}

var errBadAnswer = errors.New("malformed answer from the slot")

func (a *answer) parse(head []byte, isHead bool) error {
	*a = answer{head: head, length: -1, connNames: a.connNames[:0]}
	eol := bytes.IndexByte(head, '\n')
	line := bytes.TrimRight(head[:eol], "\r")
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("%w: status line %q", errBadAnswer, line)
	}
	a.status = line[9:]
	code, err := strconv.Atoi(string(a.status[:3]))
	if err != nil || code < 100 || code > 999 || len(a.status) > 3 && a.status[3] != ' ' {
		return fmt.Errorf("%w: status line %q", errBadAnswer, line)
	}
	a.code = code
	a.close = line[7] == '0'
	a.headers = head[eol+1:]
	for rest := a.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		l := bytes.TrimRight(rest[:i], "\r")
		rest = rest[i+1:]
		if len(l) == 0 {
			break
		}
		name, value, ok := splitHeader(l)
		if !ok {
			return fmt.Errorf("%w: header line %q", errBadAnswer, l)
		}
		switch {
		case eqFold(name, "content-length"):
			n, err := strconv.ParseUint(string(value), 10, 63) // digits only, as net/http reads it
			if err != nil || a.length >= 0 && a.length != int64(n) {
				return fmt.Errorf("%w: Content-Length %q", errBadAnswer, value)
			}
			a.length = int64(n)
		case eqFold(name, "transfer-encoding"):
			if !eqFold(value, "chunked") || a.chunked {
				return fmt.Errorf("%w: Transfer-Encoding %q", errBadAnswer, value)
			}
			a.chunked = true
		case eqFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, comma) {
				tok = bytes.TrimSpace(tok)
				switch {
				case eqFold(tok, "close"):
					a.close = true
				case len(tok) > 0 && !eqFold(tok, "keep-alive"):
					a.connNames = append(a.connNames, tok)
				}
			}
		}
	}
	if a.chunked {
		a.length = -1 // Transfer-Encoding wins (RFC 9112, 6.3)
	}
	a.noBody = isHead || code < 200 || code == 204 || code == 304
	if !a.noBody && !a.chunked && a.length < 0 {
		a.close = true // delimited by the slot closing
	}
	return nil
}

// dropAnswerHeader: a header of the slot's answer that is not relayed.
func (a *answer) dropAnswerHeader(name []byte) bool {
	switch {
	case eqFold(name, "connection"), eqFold(name, "keep-alive"), eqFold(name, "proxy-connection"),
		eqFold(name, "te"), eqFold(name, "upgrade"), eqFold(name, "transfer-encoding"),
		eqFold(name, "proxy-authenticate"), eqFold(name, "proxy-authorization"), eqFold(name, "x-bgd-slot"):
		return true
	case a.chunked && eqFold(name, "content-length"):
		return true // the body is chunked: a length beside it would be a second framing
	}
	for _, n := range a.connNames {
		if bytes.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// writeHead writes the answer's head as the client gets it; setCookie is
// a sticky split's Set-Cookie value for a final answer, or "".
func (a *answer) writeHead(w *bufio.Writer, s *side, setCookie string, closing bool) {
	w.WriteString("HTTP/1.1 ")
	w.Write(a.status)
	w.Write(crlf)
	for rest := a.headers; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i+1]
		rest = rest[i+1:]
		l := bytes.TrimRight(line, "\r\n")
		if len(l) == 0 {
			break
		}
		if name, _, _ := bytes.Cut(l, colon); !a.dropAnswerHeader(name) {
			w.Write(l)
			w.Write(crlf)
		}
	}
	if a.code >= 200 {
		w.WriteString("X-Bgd-Slot: ")
		w.WriteString(s.color.String())
		w.Write(crlf)
		if setCookie != "" {
			w.WriteString("Set-Cookie: ")
			w.WriteString(setCookie)
			w.Write(crlf)
		}
	}
	if a.code >= 200 && !a.noBody && a.length < 0 {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if closing && a.code >= 200 {
		w.WriteString("Connection: close\r\n")
	}
	w.Write(crlf)
}

// relayBody copies the answer's body from kc to c as it comes.
func (a *answer) relayBody(c *frontConn, kc *keptConn) error {
	switch {
	case a.noBody:
		return nil
	case a.chunked:
		return relayChunked(c, kc.br)
	case a.length >= 0:
		return relayN(c, kc.br, a.length)
	default:
		return relayUntilClose(c, kc.br)
	}
}

// errClientGone: a write to the client failed.
var errClientGone = errors.New("client went away")

// fill waits for the slot's next bytes, flushing what the client has not
// got yet first when none are buffered (a streamed answer reaches the
// client as the slot sends it).
func fill(c *frontConn, br *bufio.Reader) error {
	if br.Buffered() > 0 {
		return nil
	}
	if c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			c.watch.gone.Store(true)
			return errClientGone
		}
	}
	_, err := br.Peek(1)
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// toClient writes b to the client; a write that fails means it left.
func (c *frontConn) toClient(b []byte) error {
	if _, err := c.bw.Write(b); err != nil {
		c.watch.gone.Store(true)
		return errClientGone
	}
	return nil
}

// nextLine reads the slot's next line (what names it in an error).
func nextLine(c *frontConn, br *bufio.Reader, what string) ([]byte, error) {
	if err := fill(c, br); err != nil {
		return nil, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errBadAnswer, what, err)
	}
	return line, nil
}

// relayN copies n bytes of br to the client.
func relayN(c *frontConn, br *bufio.Reader, n int64) error {
	for n > 0 {
		if err := fill(c, br); err != nil {
			return err
		}
		b, _ := br.Peek(int(min(int64(br.Buffered()), n)))
		if err := c.toClient(b); err != nil {
			return err
		}
		br.Discard(len(b))
		n -= int64(len(b))
	}
	return nil
}

// relayChunked copies a chunked body, its trailers included, to the client.
func relayChunked(c *frontConn, br *bufio.Reader) error {
	for {
		line, err := nextLine(c, br, "chunk size line")
		if err != nil {
			return err
		}
		size, err := chunkSize(line)
		if err != nil {
			return err
		}
		if err := c.toClient(line); err != nil {
			return err
		}
		if size == 0 {
			break
		}
		if err := relayN(c, br, size); err != nil {
			return err
		}
		end, err := nextLine(c, br, "chunk end")
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(end, "\r\n")) != 0 {
			return fmt.Errorf("%w: a chunk longer than its size", errBadAnswer)
		}
		if err := c.toClient(end); err != nil {
			return err
		}
	}
	// The trailer section, through its blank line.
	for {
		line, err := nextLine(c, br, "trailer")
		if err != nil {
			return err
		}
		if err := c.toClient(line); err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}

// chunkSize reads a chunk-size line ("1a;ext\r\n").
func chunkSize(line []byte) (int64, error) {
	l := bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(l, ';'); i >= 0 {
		l = l[:i]
	}
	l = bytes.TrimRight(l, " \t")
	if len(l) == 0 || len(l) > 15 {
		return 0, fmt.Errorf("%w: chunk size %q", errBadAnswer, line)
	}
	var n int64
	for _, b := range l {
		if !isHex(b) {
			return 0, fmt.Errorf("%w: chunk size %q", errBadAnswer, line)
		}
		n = n<<4 | int64(hexVal(b))
	}
	return n, nil
}

func hexVal(b byte) byte {
	switch {
	case b >= 'a':
		return b - 'a' + 10
	case b >= 'A':
		return b - 'A' + 10
	}
	return b - '0'
}

// relayUntilClose sends a body that ends when the slot closes the
// connection to the client in chunks.
func relayUntilClose(c *frontConn, br *bufio.Reader) error {
	for {
		err := fill(c, br)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			if _, err := c.bw.WriteString("0\r\n\r\n"); err != nil {
				return errClientGone
			}
			return nil
		}
		if err != nil {
			return err
		}
		b, _ := br.Peek(br.Buffered())
		fmt.Fprintf(c.bw, "%x\r\n", len(b))
		c.bw.Write(b)
		if err := c.toClient(crlf); err != nil {
			return err
		}
		br.Discard(len(b))
	}
}

// watchAfter is how long a request waits for its slot before the proxy
// starts watching for its client leaving. Quicker requests never pay for
// the watch.
const watchAfter = 50 * time.Millisecond

// clientWatch notices a client that closes its connection while its
// request waits for the slot, and then cuts the connection to the slot
// (the request's slot handler sees its context end; nginx's 499). It
// peeks at the client's socket (MSG_PEEK: nothing is read, a pipelined
// next request stays where it is); bytes there end the watch, as
// net/http's background read ends at a pipelined request.
type clientWatch struct {
	c     *frontConn
	timer *time.Timer
	raw   syscall.RawConn
	// gone: the client left (or a write to it failed); left gets a value
	// when the watch sees it leave.
	gone atomic.Bool
	left chan struct{}

	mu      sync.Mutex
	active  bool          // a request is being served
	up      net.Conn      // the slot connection to cut
	running chan struct{} // closed when a started watch ends
}

func (w *clientWatch) init(c *frontConn) {
	w.c = c
	if sc, ok := c.conn.(syscall.Conn); ok {
		w.raw, _ = sc.SyscallConn()
	}
	w.left = make(chan struct{}, 1)
	w.timer = time.AfterFunc(time.Hour, w.run)
	w.timer.Stop()
}

// start arms the watch for a new request.
func (w *clientWatch) start() {
	w.gone.Store(false)
	select {
	case <-w.left:
	default:
	}
	w.mu.Lock()
	w.active, w.up, w.running = true, nil, nil
	w.mu.Unlock()
	if w.raw != nil {
		w.timer.Reset(watchAfter)
	}
}

// cut names the slot connection to cut if the client leaves.
func (w *clientWatch) cut(up net.Conn) {
	w.mu.Lock()
	w.up = up
	w.mu.Unlock()
	if w.gone.Load() {
		up.SetDeadline(aLongTimeAgo)
	}
}

// stop ends the watch of the request.
func (w *clientWatch) stop() {
	w.timer.Stop()
	w.mu.Lock()
	w.active, w.up = false, nil
	done := w.running
	w.mu.Unlock()
	if done != nil {
		w.c.conn.SetReadDeadline(aLongTimeAgo)
		<-done
		w.c.conn.SetReadDeadline(time.Time{})
	}
}

func (w *clientWatch) run() {
	w.mu.Lock()
	if !w.active {
		w.mu.Unlock()
		return
	}
	done := make(chan struct{})
	w.running = done
	w.mu.Unlock()
	defer close(done)
	var one [1]byte
	left := false
	err := w.raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err == syscall.EAGAIN || err == syscall.EINTR {
			return false
		}
		left = err != nil || n == 0
		return true
	})
	if err != nil || !left {
		return
	}
	w.gone.Store(true)
	w.left <- struct{}{}
	w.mu.Lock()
	if w.up != nil {
		w.up.SetDeadline(aLongTimeAgo)
	}
	w.mu.Unlock()
}
