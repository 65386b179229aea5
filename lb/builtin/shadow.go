package builtin

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// Shadow traffic: while the state file says so (state.State.Shadow), the
// proxy sends a copy of each request the active slot served to the standby
// slot, once the client has had its answer, and discards the standby's
// answer after comparing its status class (2xx, 4xx, ...) with the
// client's. The copy never delays nor fails the client: it is queued
// (ShadowQueue deep) for ShadowWorkers workers, and dropped and counted
// when the queue is full. A request whose body is over ShadowBodyCap is
// not copied (counted as too_large), nor is one whose body the active slot
// did not read to its end (the proxy copies the body as it forwards it),
// nor a protocol upgrade (WebSocket).

// ShadowBodyCap is the largest request body the proxy copies.
const ShadowBodyCap = 64 << 10

// ShadowQueue is how many copies may wait for a worker; ShadowWorkers is
// how many are sent at once.
const (
	ShadowQueue   = 256
	ShadowWorkers = 4
)

// ShadowTimeout bounds one copy, from its sending to the end of the
// standby's answer.
const ShadowTimeout = 10 * time.Second

// ShadowHeader is set to "1" on every copy, so that the standby can tell a
// copy from a client's request.
const ShadowHeader = "X-Bgd-Shadow"

// The results of a shadow request (the label result of
// bgd_proxy_shadow_requests_total).
const (
	ShadowSame     = "same"      // the standby answered with the client's status class
	ShadowDiffers  = "differs"   // another status class
	ShadowError    = "error"     // no answer: refused, reset, timed out
	ShadowDropped  = "dropped"   // the queue was full: not sent
	ShadowTooLarge = "too_large" // the body was not copied: not sent
)

var shadowResults = [...]string{ShadowSame, ShadowDiffers, ShadowError, ShadowDropped, ShadowTooLarge}

// ShadowInfo is the shadow part of RouteInfo: where copies go and the
// proxy's counts since it started (they survive shadow off and on).
type ShadowInfo struct {
	// Standby is the colour that gets the copies, Port its port.
	Standby config.Color `json:"standby"`
	Port    int          `json:"port"`
	// Counts has every result (ShadowSame...), 0 included.
	Counts map[string]uint64 `json:"counts"`
	// MeanMs and MaxMs are the standby's answer times (same or differs).
	MeanMs float64 `json:"mean_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// shadowJob is one copy waiting for a worker.
type shadowJob struct {
	port       int
	method     string
	uri, host  string
	header     http.Header
	body       []byte
	clientCode int
}

// shadower sends the copies and counts what became of them.
type shadower struct {
	host    string
	jobs    chan shadowJob
	client  *http.Client
	counts  [len(shadowResults)]atomic.Uint64
	latSum  atomic.Int64 // nanoseconds
	latN    atomic.Int64
	latMax  atomic.Int64
	results *prometheus.CounterVec
	latency prometheus.Histogram
}

// newShadowMetrics are the shadow series of service.
func newShadowMetrics(labels prometheus.Labels) (*prometheus.CounterVec, prometheus.Histogram) {
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bgd_proxy_shadow_requests_total", ConstLabels: labels,
		Help: "Copies of requests for the standby slot (shadow traffic), by result: same or differs (status class of the standby's answer vs the client's), error, dropped (queue full), too_large (body not copied).",
	}, []string{"result"})
	for _, r := range shadowResults {
		results.WithLabelValues(r)
	}
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "bgd_proxy_shadow_duration_seconds", ConstLabels: labels,
		Help:    "Time the standby slot took to answer a copy (shadow traffic).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	return results, latency
}

// startShadow starts the workers, which stop when ctx ends.
func (p *Proxy) startShadow(ctx context.Context) {
	s := &shadower{host: p.UpstreamHost, jobs: make(chan shadowJob, ShadowQueue),
		results: p.metrics.shadowResults, latency: p.metrics.shadowLatency,
		client: &http.Client{Timeout: ShadowTimeout, Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: ShadowWorkers,
			IdleConnTimeout:     90 * time.Second,
		},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	p.shadow = s
	for range ShadowWorkers {
		go s.work(ctx)
	}
}

// shadowSide is the standby side that copies go to when st asks for them,
// nil otherwise.
func shadowSide(st *state.State) *side {
	if !st.Shadow {
		return nil
	}
	other := st.ActiveVersion.Other()
	sl := st.Slot(other)
	return &side{color: other, port: sl.Port, pid: sl.PID}
}

// sameShadow reports whether u and v copy requests to the same place.
func sameShadow(u, v *upstream) bool {
	if u.shadow == nil || v.shadow == nil {
		return u.shadow == v.shadow
	}
	return u.shadow.color == v.shadow.color && u.shadow.port == v.shadow.port
}

// shadowCapture is a request being served whose copy is to be sent.
type shadowCapture struct {
	s   *shadower
	job shadowJob
	// body copies the request body as the proxy forwards it; nil: none.
	body     *teeBody
	tooLarge bool
}

// capture prepares the copy of r, which s (a side of u) serves: nil when u
// copies nothing, when s is not u's active side (a canary's own requests
// already reach the standby), or for a protocol upgrade.
func (p *Proxy) capture(u *upstream, s *side, r *http.Request) *shadowCapture {
	if u.shadow == nil || p.shadow == nil || s != &u.side || r.Header.Get("Upgrade") != "" {
		return nil
	}
	c := &shadowCapture{s: p.shadow, job: shadowJob{port: u.shadow.port, method: r.Method,
		uri: r.URL.RequestURI(), host: r.Host, header: shadowHeader(r)}}
	switch {
	case r.ContentLength > ShadowBodyCap:
		c.tooLarge = true
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
	default:
		c.body = &teeBody{ReadCloser: r.Body}
		r.Body = c.body
	}
	return c
}

// send queues the copy, once the client has had clientCode; nil c: none.
func (c *shadowCapture) send(clientCode int) {
	if c == nil {
		return
	}
	if c.body != nil {
		body, ok := c.body.copied()
		if !ok {
			c.tooLarge = true
		}
		c.job.body = body
	}
	if c.tooLarge {
		c.s.count(ShadowTooLarge)
		return
	}
	c.job.clientCode = clientCode
	select {
	case c.s.jobs <- c.job:
	default:
		c.s.count(ShadowDropped)
	}
}

// shadowHeader is r's header as the copy carries it: without hop-by-hop
// headers, with the client's address added to X-Forwarded-For and
// ShadowHeader set.
func shadowHeader(r *http.Request) http.Header {
	h := r.Header.Clone()
	for _, v := range h["Connection"] {
		for _, f := range bytes.Split([]byte(v), []byte(",")) {
			h.Del(string(bytes.TrimSpace(f)))
		}
	}
	for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(k)
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := h.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = joinComma(prior) + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
	h.Set(ShadowHeader, "1")
	return h
}

func joinComma(v []string) string {
	var b bytes.Buffer
	for i, s := range v {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// work sends copies until ctx ends.
func (s *shadower) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.jobs:
			s.do(ctx, j)
		}
	}
}

// do sends one copy and counts its result.
func (s *shadower) do(ctx context.Context, j shadowJob) {
	req, err := http.NewRequestWithContext(ctx, j.method,
		"http://"+net.JoinHostPort(s.host, strconv.Itoa(j.port))+j.uri, bytes.NewReader(j.body))
	if err != nil {
		s.count(ShadowError)
		return
	}
	req.Header, req.Host = j.header, j.host
	if len(j.body) == 0 {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	start := time.Now()
	resp, err := s.client.Do(req)
	if err == nil {
		// Read the answer to its end (bounded) so the connection is reused.
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}
	if err != nil {
		s.count(ShadowError)
		return
	}
	d := time.Since(start)
	s.latSum.Add(int64(d))
	s.latN.Add(1)
	for {
		m := s.latMax.Load()
		if int64(d) <= m || s.latMax.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	s.latency.Observe(d.Seconds())
	if resp.StatusCode/100 == j.clientCode/100 {
		s.count(ShadowSame)
	} else {
		s.count(ShadowDiffers)
	}
}

func (s *shadower) count(result string) {
	for i, r := range shadowResults {
		if r == result {
			s.counts[i].Add(1)
		}
	}
	s.results.WithLabelValues(result).Inc()
}

// shadowInfo is the RouteInfo.Shadow of u: nil when u copies nothing.
func (p *Proxy) shadowInfo(u *upstream) *ShadowInfo {
	if u.shadow == nil {
		return nil
	}
	si := &ShadowInfo{Standby: u.shadow.color, Port: u.shadow.port, Counts: map[string]uint64{}}
	s := p.shadow
	if s == nil {
		return si
	}
	for i, r := range shadowResults {
		si.Counts[r] = s.counts[i].Load()
	}
	if n := s.latN.Load(); n > 0 {
		si.MeanMs = float64(s.latSum.Load()) / float64(n) / 1e6
	}
	si.MaxMs = float64(s.latMax.Load()) / 1e6
	return si
}

// teeBody copies a request body, up to ShadowBodyCap, as it is read.
type teeBody struct {
	io.ReadCloser
	mu   sync.Mutex
	buf  []byte
	over bool
	eof  bool
}

func (t *teeBody) Read(b []byte) (int, error) {
	n, err := t.ReadCloser.Read(b)
	t.mu.Lock()
	if n > 0 && !t.over {
		if len(t.buf)+n > ShadowBodyCap {
			t.over, t.buf = true, nil
		} else {
			t.buf = append(t.buf, b[:n]...)
		}
	}
	if err == io.EOF {
		t.eof = true
	}
	t.mu.Unlock()
	return n, err
}

// copied is the whole body, and whether it was read to its end within the
// cap.
func (t *teeBody) copied() ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf, t.eof && !t.over
}

// servesShadow reports whether ri copies requests as r asks: to r's
// standby while r.Shadow, not at all otherwise.
func servesShadow(ri *RouteInfo, r lb.Route) bool {
	if !r.Shadow {
		return ri.Shadow == nil
	}
	return ri.Shadow != nil && ri.Shadow.Standby == r.Standby.Color
}

// shadowHint says why the proxy serves r's routing but not its shadow.
func shadowHint(ri *RouteInfo, r lb.Route) string {
	file := cmp.Or(ri.StateFile, "followed")
	if r.Shadow {
		return fmt.Sprintf(": the state file %s does not say shadow, or the proxy (pid %d) is older than shadow traffic (restart it)", file, ri.PID)
	}
	return fmt.Sprintf(": the state file %s still says shadow, which this route ends", file)
}

// renderShadow is the line of Render that tells where copies go.
func renderShadow(r lb.Route) string {
	if !r.Shadow {
		return ""
	}
	return fmt.Sprintf("shadow copies to %s %s (body up to %d KiB, queue %d, %d workers; answers discarded)\n",
		r.Standby.Color, r.Standby.Addr(), ShadowBodyCap>>10, ShadowQueue, ShadowWorkers)
}
