package builtin

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// benchServeHTTP measures Proxy.ServeHTTP in front of two real slots on
// loopback, with the routing that route sets up (parallel clients; the slot
// round trip is included).
func benchServeHTTP(b *testing.B, route func(testing.TB, *state.Store, *Balancer), cookie string) {
	p, store, bal := startProxy(b, demoSlot(b, config.Blue), demoSlot(b, config.Green))
	route(b, store, bal)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
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
