package slots

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"time"
)

// ErrNotHealthy: the slot did not answer its health check as expected.
var ErrNotHealthy = errors.New("not healthy")

// ErrExited: the slot's process ended while bgd waited for it.
var ErrExited = errors.New("slot process exited")

// Checker probes slots over HTTP.
type Checker struct {
	// Path is the health endpoint, e.g. "/health".
	Path string
	// Expect is the status a healthy slot answers; 0: any 2xx.
	Expect int
	// RequestTimeout bounds one probe. Default 2s.
	RequestTimeout time.Duration
	// Client sends the probes. Default: one without keep-alive, so a probe
	// always tests that the slot accepts new connections, and without a
	// proxy (HTTP_PROXY and the like never reroute a probe). Whatever the
	// client, a probe never follows a redirect: a 3xx is the slot's answer.
	Client *http.Client
}

var probeClient = &http.Client{
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: noRedirect,
}

// noRedirect makes a client return a redirect as the answer.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// probeBodyLimit is how much of a probe's answer is read (and then the
// connection closed), so a huge or endless body cannot stall a sweep.
const probeBodyLimit = 64 << 10

// Probe sends one GET to http://host:port<Path> and returns nil when healthy.
func (c *Checker) Probe(ctx context.Context, host string, port int) error {
	timeout := c.RequestTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := fmt.Sprintf("http://%s:%d%s", host, port, c.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := probeClient
	if c.Client != nil {
		cl := *c.Client
		cl.CheckRedirect = noRedirect
		client = &cl
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &ProbeError{URL: url, Err: err}
	}
	// Drain a bounded amount (within the request timeout) so a huge body
	// cannot stall the sweep.
	io.Copy(io.Discard, io.LimitReader(resp.Body, probeBodyLimit))
	resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if c.Expect != 0 {
		ok = resp.StatusCode == c.Expect
	}
	if !ok {
		return &ProbeError{URL: url, Status: resp.StatusCode}
	}
	return nil
}

// ProbeError is a failed probe; it matches ErrNotHealthy.
type ProbeError struct {
	URL    string
	Status int   // the status answered, or 0
	Err    error // the transport error, or nil
}

func (e *ProbeError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("GET %s: %v", e.URL, e.Err)
	}
	return fmt.Sprintf("GET %s answered %d", e.URL, e.Status)
}

func (e *ProbeError) Is(target error) bool { return target == ErrNotHealthy }
func (e *ProbeError) Unwrap() error        { return e.Err }

// Wait says how to wait for a starting slot.
type Wait struct {
	// Timeout is the whole wait. Required.
	Timeout time.Duration
	// Interval between probes after the fast phase. Default 1s.
	Interval time.Duration
	// FastInterval and FastFor: probes this far apart during the first
	// FastFor of the wait, so a slot that is ready quickly is seen at once.
	// After that the gap grows with the time already waited (a twentieth
	// of it) up to Interval, so a slow starter is seen within about 5% of
	// its own start time rather than up to a whole Interval late.
	// Defaults 20ms and 3s.
	FastInterval, FastFor time.Duration
	// Exited, when closed, ends the wait at once (the process died).
	Exited <-chan struct{}
	// OnProbe, if set, is called after each failed probe with the elapsed time.
	OnProbe func(elapsed time.Duration, err error)
}

// WaitHealthy probes until the slot is healthy, the process exits, the
// timeout passes or ctx ends.
func (c *Checker) WaitHealthy(ctx context.Context, host string, port int, w Wait) error {
	if w.Interval <= 0 {
		w.Interval = time.Second
	}
	if w.FastInterval <= 0 {
		w.FastInterval = 20 * time.Millisecond
	}
	if w.FastFor <= 0 {
		w.FastFor = 3 * time.Second
	}
	start := time.Now()
	deadline := start.Add(w.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var last error
	for {
		select {
		case <-w.Exited:
			return ErrExited
		default:
		}
		last = c.Probe(ctx, host, port)
		if last == nil {
			return nil
		}
		elapsed := time.Since(start)
		if w.OnProbe != nil {
			w.OnProbe(elapsed, last)
		}
		next := min(max(elapsed/20, w.FastInterval), w.Interval)
		if elapsed < w.FastFor {
			next = w.FastInterval
		}
		timer := time.NewTimer(next)
		select {
		case <-w.Exited:
			timer.Stop()
			return ErrExited
		case <-ctx.Done():
			timer.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && time.Now().After(deadline.Add(-time.Millisecond)) {
				return fmt.Errorf("not healthy after %s: %w", w.Timeout, last)
			}
			return ctx.Err()
		case <-timer.C:
		}
	}
}
