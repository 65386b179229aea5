package builtin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
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
	for v := range h.values("cookie") {
		values = append(values, string(v))
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
			if userAgent || len(trimOWS(bytes.TrimSuffix(value, crlf))) == 0 {
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
		for v := range h.values("x-forwarded-for") {
			w.Write(v)
			w.WriteString(", ")
		}
	}
	w.Write(c.clientIP)
	w.WriteString("\r\nX-Forwarded-Host: ")
	w.Write(h.host)
	w.WriteString("\r\nX-Forwarded-Proto: http\r\n\r\n")
}

var colon = []byte(":")
