package builtin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoHeaders is a slot that answers the request headers it got (and the
// Host) as JSON.
func echoHeaders(t *testing.T) int {
	return backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h["Host"] = []string{r.Host}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(h)
	})
}

// rawRequest sends req verbatim on a new connection to addr (a hostile
// client writes what it likes) and returns the response with its body read.
func rawRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// seenHeaders sends req to the proxy in front of echoHeaders and returns the
// headers the slot saw.
func seenHeaders(t *testing.T, addr, req string) http.Header {
	t.Helper()
	resp, body := rawRequest(t, addr, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy answered %d %q", resp.StatusCode, body)
	}
	var h http.Header
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("slot answer %q: %v", body, err)
	}
	return h
}

// The proxy appends the client's address to the X-Forwarded-For chain the
// client sent (as a Director-based ReverseProxy and nginx's
// $proxy_add_x_forwarded_for do), and sets X-Forwarded-Host and
// X-Forwarded-Proto itself, whatever the client claimed.
func TestProxyXForwardedHeaders(t *testing.T) {
	p, _, _ := startProxy(t, echoHeaders(t), backend(t, "green", nil))
	for _, tc := range []struct {
		name, headers string
		wantXFF       string
	}{
		{"no chain", "", "127.0.0.1"},
		{"one hop", "X-Forwarded-For: 203.0.113.9\r\n", "203.0.113.9, 127.0.0.1"},
		{"a chain", "X-Forwarded-For: 203.0.113.9, 198.51.100.4\r\n", "203.0.113.9, 198.51.100.4, 127.0.0.1"},
		{"two header lines fold into one", "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.4\r\n", "203.0.113.9, 198.51.100.4, 127.0.0.1"},
		{"spoofed host and proto are replaced", "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nForwarded: for=192.0.2.1;proto=https\r\n", "203.0.113.9, 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := seenHeaders(t, p.Listen, "GET /h HTTP/1.1\r\nHost: app.example:8080\r\n"+tc.headers+"Connection: close\r\n\r\n")
			if got := h["X-Forwarded-For"]; len(got) != 1 || got[0] != tc.wantXFF {
				t.Errorf("slot saw X-Forwarded-For %q, want one header %q", got, tc.wantXFF)
			}
			if got := h["X-Forwarded-Host"]; len(got) != 1 || got[0] != "app.example:8080" {
				t.Errorf("slot saw X-Forwarded-Host %q, want the requested host app.example:8080", got)
			}
			if got := h["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "http" {
				t.Errorf("slot saw X-Forwarded-Proto %q, want http", got)
			}
			if got := h.Get("Host"); got != "app.example:8080" {
				t.Errorf("slot saw Host %q, want the client's app.example:8080", got)
			}
			if got, ok := h["Forwarded"]; ok {
				t.Errorf("the client's Forwarded header reached the slot: %q", got)
			}
		})
	}
}

// A client that lists the forwarding headers in Connection (hop-by-hop: "for
// the proxy only") cannot make the proxy drop its own entry: the slot sees
// the client's real address and no client-supplied values.
func TestProxyConnectionHeaderCannotDropForwarding(t *testing.T) {
	p, _, _ := startProxy(t, echoHeaders(t), backend(t, "green", nil))
	h := seenHeaders(t, p.Listen, "GET / HTTP/1.1\r\nHost: app.example\r\n"+
		"Connection: keep-alive, X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto\r\n"+
		"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\r\n")
	if got := h["X-Forwarded-For"]; len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("slot saw X-Forwarded-For %q, want only the real client 127.0.0.1", got)
	}
	if got := h.Get("X-Forwarded-Host"); got != "app.example" {
		t.Errorf("slot saw X-Forwarded-Host %q, want app.example", got)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("slot saw X-Forwarded-Proto %q, want http", got)
	}
}

// Hop-by-hop headers (RFC 9110 7.6.1), named in Connection or standard ones,
// do not cross the proxy in either direction.
func TestProxyStripsHopByHopHeaders(t *testing.T) {
	slot := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		w.Header().Set("Connection", "X-Slot-Private")
		w.Header().Set("X-Slot-Private", "1")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(h)
	})
	p, _, _ := startProxy(t, slot, backend(t, "green", nil))
	resp, body := rawRequest(t, p.Listen, "GET / HTTP/1.1\r\nHost: app\r\n"+
		"Connection: X-Client-Private\r\nX-Client-Private: secret\r\n"+
		"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"+
		"Upgrade: h2c\r\nX-Kept: yes\r\n\r\n")
	var h http.Header
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("%d %q: %v", resp.StatusCode, body, err)
	}
	for _, name := range []string{"X-Client-Private", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Upgrade"} {
		if v, ok := h[name]; ok {
			t.Errorf("hop-by-hop request header %s reached the slot: %q", name, v)
		}
	}
	if h.Get("X-Kept") != "yes" {
		t.Errorf("an end-to-end header was lost: the slot saw %v", h)
	}
	for _, name := range []string{"X-Slot-Private", "Proxy-Authenticate"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("hop-by-hop response header %s reached the client: %q", name, v)
		}
	}
}

// An answer without Content-Type reaches the client without one: neither the
// proxy nor its status recorder sniffs the body (a sniffed text/html turns
// bytes the slot never called HTML into a page a browser renders).
func TestProxyAddsNoContentType(t *testing.T) {
	const page = "<html><body><script>alert(1)</script></body></html>"
	slot := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/typed":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		case "/bytes":
			w.Header()["Content-Type"] = nil // the slot itself does not sniff
			w.Write([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
			return
		case "/stream":
			w.Header()["Content-Type"] = nil
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush() // no Content-Length: the proxy streams
		case "/teapot":
			w.Header()["Content-Type"] = nil
			w.WriteHeader(http.StatusTeapot)
		default:
			w.Header()["Content-Type"] = nil
		}
		io.WriteString(w, page)
	})
	p, _, _ := startProxy(t, slot, backend(t, "green", nil))
	for _, tc := range []struct {
		path, wantType string
		wantCode       int
	}{
		{"/untyped", "", 200},
		{"/bytes", "", 200},
		{"/stream", "", 200},
		{"/teapot", "", 418},
		{"/typed", "text/plain; charset=utf-8", 200},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			resp, body := rawRequest(t, p.Listen, "GET "+tc.path+" HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != tc.wantCode || body == "" {
				t.Fatalf("%s: %d %q", tc.path, resp.StatusCode, body)
			}
			got, ok := resp.Header["Content-Type"]
			if tc.wantType == "" && ok {
				t.Errorf("%s: the client got Content-Type %q; the slot sent none", tc.path, got)
			}
			if tc.wantType != "" && resp.Header.Get("Content-Type") != tc.wantType {
				t.Errorf("%s: Content-Type %q, want the slot's %q", tc.path, got, tc.wantType)
			}
			if resp.Header.Get("X-Bgd-Slot") != "blue" {
				t.Errorf("%s: X-Bgd-Slot %q, want blue", tc.path, resp.Header.Get("X-Bgd-Slot"))
			}
		})
	}
}

// Admin access is decided by the connection's address alone: no header a
// client can write (forwarding headers, Host) buys it.
func TestProxyAdminAccessIgnoresHeaders(t *testing.T) {
	p, _, _ := startProxy(t, backend(t, "blue", nil), backend(t, "green", nil))
	spoofs := map[string]string{
		"X-Forwarded-For": "127.0.0.1",
		"X-Real-Ip":       "127.0.0.1",
		"Forwarded":       "for=127.0.0.1",
		"Client-Ip":       "::1",
	}
	for _, path := range []string{"/metrics", "/monitoring", RoutePath} {
		req := httptest.NewRequest(http.MethodGet, "http://localhost"+path, nil)
		req.RemoteAddr = "192.0.2.10:4000"
		for k, v := range spoofs {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s from 192.0.2.10 with spoofed headers: %d, want 403", path, rec.Code)
		}
	}
	// And over a real loopback connection the same headers change nothing.
	for _, path := range []string{"/metrics", RoutePath} {
		var hs strings.Builder
		for k, v := range spoofs {
			fmt.Fprintf(&hs, "%s: %s\r\n", k, v)
		}
		resp, _ := rawRequest(t, p.Listen, "GET "+path+" HTTP/1.1\r\nHost: localhost\r\n"+hs.String()+"Connection: close\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s from loopback: %d, want 200", path, resp.StatusCode)
		}
	}
}

// syncBuffer is a log sink the proxy's goroutines may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// metricsText reads the proxy's /metrics.
func metricsText(t *testing.T, addr string) string {
	t.Helper()
	_, body := get(t, addr, "/metrics")
	return body
}

// A client that hangs up before the slot answers is not a failure of the
// slot: it is counted as 499 (client closed request), not 502, and logged
// at debug level only, so hostile clients cannot fake a failing slot in the
// metrics or flood the log. A slot that is really down still counts 502 and
// logs a warning.
func TestProxyClientHangupIsNotASlotError(t *testing.T) {
	got := make(chan struct{}, 1)
	slot := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		<-r.Context().Done() // answers only when the proxy gives up
	})
	logs := &syncBuffer{}
	p, _, _ := startProxy(t, slot, backend(t, "green", nil), func(p *Proxy) {
		p.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	for range 3 {
		c, err := net.Dial("tcp", p.Listen)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
		<-got
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(metricsText(t, p.Listen), `bgd_proxy_requests_total{code="499",service="app",slot="blue"} 3`) {
		if time.Now().After(deadline) {
			t.Fatalf("3 hangups not counted as 499:\n%s", grepLines(metricsText(t, p.Listen), "bgd_proxy_requests_total"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := metricsText(t, p.Listen); strings.Contains(m, `code="502"`) {
		t.Errorf("client hangups counted as 502:\n%s", grepLines(m, "bgd_proxy_requests_total"))
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("client hangups logged as warnings:\n%s", logs.String())
	}

	// A down slot: 502, counted, and a warning.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logs2 := &syncBuffer{}
	p2, _, _ := startProxy(t, deadPort, backend(t, "green", nil), func(p *Proxy) {
		p.Logger = slog.New(slog.NewTextHandler(logs2, nil))
	})
	if code, _ := get(t, p2.Listen, "/"); code != http.StatusBadGateway {
		t.Fatalf("down slot: %d, want 502", code)
	}
	if m := metricsText(t, p2.Listen); !strings.Contains(m, `bgd_proxy_requests_total{code="502",service="app",slot="blue"} 1`) {
		t.Errorf("down slot not counted as 502:\n%s", grepLines(m, "bgd_proxy_requests_total"))
	}
	if l := logs2.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "proxy upstream error") {
		t.Errorf("down slot not logged as a warning:\n%s", l)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A client that sends its headers slowly (or never finishes them) is cut off
// after ReadHeaderTimeout, and never reaches the slot.
func TestProxyCutsOffSlowHeaders(t *testing.T) {
	var reached atomic.Int32
	slot := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) { reached.Add(1) })
	p, _, _ := startProxy(t, slot, backend(t, "green", nil), func(p *Proxy) { p.ReadHeaderTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: app\r\nX-Slow: ")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c) // the proxy closes the connection (after a 408, or without one)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("a client that never finished its headers was still connected after %s", time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cut off after %s, want about 300ms", d)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the half-sent request reached the slot %d times", n)
	}
}
