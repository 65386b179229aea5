package builtin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// benchServeHTTP measures Proxy.ServeHTTP in front of two real slots on
// loopback, with the routing that route sets up (parallel clients; the slot
// round trip is included).
func benchServeHTTP(b *testing.B, route func(testing.TB, *state.Store, *Balancer), cookie string) {
	benchServeHTTPMethod(b, route, cookie, http.MethodGet)
}

// benchServeHTTPMethod: benchServeHTTP with requests of method; a POST
// carries a small body.
func benchServeHTTPMethod(b *testing.B, route func(testing.TB, *state.Store, *Balancer), cookie, method string) {
	p, store, bal := startProxy(b, demoSlot(b, config.Blue), demoSlot(b, config.Green))
	route(b, store, bal)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader(`{"order":42}`)
			}
			req := httptest.NewRequest(method, "/", body)
			req.RemoteAddr = "127.0.0.1:40000"
			if cookie != "" {
				req.AddCookie(&http.Cookie{Name: lb.StickyCookie("app"), Value: cookie})
			}
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %q", rec.Code, rec.Body.String())
			}
		}
	})
}

// BenchmarkServeHTTP: no split, every request to the active slot.
func BenchmarkServeHTTP(b *testing.B) {
	benchServeHTTP(b, func(testing.TB, *state.Store, *Balancer) {}, "")
}

// BenchmarkServeHTTPPost: no split, a POST with a body: the path of
// net/http's Transport (BenchmarkServeHTTP's GETs take the kept-connection
// path).
func BenchmarkServeHTTPPost(b *testing.B) {
	benchServeHTTPMethod(b, func(testing.TB, *state.Store, *Balancer) {}, "", http.MethodPost)
}

// BenchmarkServeHTTPSplit: a 90/10 split, a draw per request.
func BenchmarkServeHTTPSplit(b *testing.B) {
	benchServeHTTP(b, func(t testing.TB, store *state.Store, bal *Balancer) {
		split(t, store, bal, config.Blue, 10, false)
	}, "")
}

// BenchmarkServeHTTPSplitSticky: a sticky 90/10 split; clients without the
// cookie (a draw and a Set-Cookie per answer).
func BenchmarkServeHTTPSplitSticky(b *testing.B) {
	benchServeHTTP(b, func(t testing.TB, store *state.Store, bal *Balancer) {
		split(t, store, bal, config.Blue, 10, true)
	}, "")
}

// BenchmarkServeHTTPSplitStickyCookie: a sticky 90/10 split; clients whose
// cookie names green (no draw, no Set-Cookie).
func BenchmarkServeHTTPSplitStickyCookie(b *testing.B) {
	benchServeHTTP(b, func(t testing.TB, store *state.Store, bal *Balancer) {
		split(t, store, bal, config.Blue, 10, true)
	}, "green")
}

// benchListener measures whole requests through the proxy's listener, as
// clients send them: each parallel client keeps one connection and sends
// req on it again and again (the client's own reading of each answer is
// included). A GET takes the fast path; a POST is handed to net/http.
func benchListener(b *testing.B, req string) {
	p, _, _ := startProxy(b, demoSlot(b, config.Blue), demoSlot(b, config.Green))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", p.Listen)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			if _, err := io.WriteString(c, req); err != nil {
				b.Error(err)
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkListenerGet: plain GETs, the fast path.
func BenchmarkListenerGet(b *testing.B) {
	benchListener(b, "GET / HTTP/1.1\r\nHost: app\r\n\r\n")
}

// BenchmarkListenerPost: POSTs with a small body, net/http's path.
func BenchmarkListenerPost(b *testing.B) {
	benchListener(b, "POST / HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"order\":42}")
}
