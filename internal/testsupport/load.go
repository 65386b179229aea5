package testsupport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"
)

// Answer is one request's answer: the slot the demo app says answered.
type Answer struct {
	Status     int
	Slot       string // X-Slot, set by the demo app
	Generation string // X-Bgd-Generation, set by bgd's nginx configuration
	Body       string
}

// Get sends one GET on a new connection (3 s timeout, no proxy).
func Get(url string) (Answer, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return Answer{Status: resp.StatusCode, Slot: resp.Header.Get("X-Slot"),
		Generation: resp.Header.Get("X-Bgd-Generation"), Body: string(body)}, err
}

// AnsweredBy sends one GET on a new connection and returns the colour that
// answered (the demo app's X-Slot); a status other than 200 is an error.
func AnsweredBy(url string) (string, error) {
	a, err := Get(url)
	if err != nil {
		return "", err
	}
	if a.Status != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", url, a.Status)
	}
	return a.Slot, nil
}

// WaitAnswer asks url every so often, each time on a new connection, until
// color answers (AnsweredBy), for up to within. HAProxy's own checks, for
// one, see a backend UP only a few checks after its app started.
func WaitAnswer(url, color string, within, every time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		by, err := AnsweredBy(url)
		if err == nil && by == color {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s answers from %q (%v), want %s", url, by, err, color)
		}
		time.Sleep(every)
	}
}

// LoadOptions say what one kind of Go client sends.
type LoadOptions struct {
	Clients int
	// KeepAlive clients reuse one connection each and POST a body, which
	// Go's transport never retries silently on a reused connection (it
	// only replays idempotent requests), so every failure is seen. The
	// others open a new connection per request.
	KeepAlive bool
	// Post makes new-connection clients POST too (they GET otherwise).
	Post bool
	// Pause between a response and a client's next request.
	Pause time.Duration
}

// Load is traffic from Go clients of one kind to the demo app, until Stop.
// A request fails unless it gets a 200 whose body is the demo app's for the
// slot its X-Slot names.
type Load struct {
	stopc chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	mu    sync.Mutex
	count LoadCount
}

// LoadCount is what a Load saw.
type LoadCount struct {
	Requests, Failures int
	Reused             int            // requests sent on a connection that had served before
	ReusedFailures     int            // failures among them
	Slots              map[string]int // successful answers by colour
	Samples            []string       // the first few failures
	// FirstFailure and LastFailure are when the first and the last failed
	// request ended (zero without failures).
	FirstFailure, LastFailure time.Time
}

func (c LoadCount) String() string {
	return fmt.Sprintf("%d requests, %d failed (%d on reused connections), %d on a reused connection, by slot %v, first failures %q",
		c.Requests, c.Failures, c.ReusedFailures, c.Reused, c.Slots, c.Samples)
}

// StartLoad runs the clients against url.
func StartLoad(url string, o LoadOptions) *Load {
	l := &Load{stopc: make(chan struct{}), count: LoadCount{Slots: map[string]int{}}}
	for range o.Clients {
		l.wg.Add(1)
		go l.client(url, o)
	}
	return l
}

func (l *Load) client(url string, o LoadOptions) {
	defer l.wg.Done()
	tr := &http.Transport{DisableKeepAlives: !o.KeepAlive, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	method, body := http.MethodGet, []byte(nil)
	if o.KeepAlive || o.Post {
		method, body = http.MethodPost, []byte(`{"order": 42}`)
	}
	for {
		select {
		case <-l.stopc:
			return
		default:
		}
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, url, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		slot, err := check(c.Do(req))
		l.mu.Lock()
		l.count.add(slot, err, reused)
		l.mu.Unlock()
		if o.Pause > 0 {
			time.Sleep(o.Pause)
		}
	}
}

func check(resp *http.Response, err error) (string, error) {
	if err != nil {
		return "", err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	slot := resp.Header.Get("X-Slot")
	switch {
	case err != nil:
		return "", fmt.Errorf("read body: %w", err)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("status %d: %q", resp.StatusCode, data)
	case slot == "":
		return "", fmt.Errorf("no X-Slot: %q", data)
	case !strings.HasPrefix(string(data), "demo app: color="+slot):
		return "", fmt.Errorf("body %q for X-Slot %q", data, slot)
	}
	return slot, nil
}

func (c *LoadCount) add(slot string, err error, reused bool) {
	c.Requests++
	if reused {
		c.Reused++
	}
	if err == nil {
		c.Slots[slot]++
		return
	}
	c.Failures++
	if c.LastFailure = time.Now(); c.Failures == 1 {
		c.FirstFailure = c.LastFailure
	}
	if reused {
		c.ReusedFailures++
	}
	if len(c.Samples) < 5 {
		c.Samples = append(c.Samples, err.Error())
	}
}

// Stop ends the load (requests in flight finish) and returns the counts;
// it may be called again.
func (l *Load) Stop() LoadCount {
	l.once.Do(func() { close(l.stopc) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.count
	c.Slots = make(map[string]int, len(l.count.Slots))
	for k, v := range l.count.Slots {
		c.Slots[k] = v
	}
	return c
}

// SlotCount is what CountSlots saw: answers by colour, and failures.
type SlotCount struct {
	Requests, Failures int
	Slots              map[string]int // 200 answers by X-Slot
}

// Share is the percentage of all requests that color answered.
func (c SlotCount) Share(color string) float64 {
	if c.Requests == 0 {
		return 0
	}
	return 100 * float64(c.Slots[color]) / float64(c.Requests)
}

// CountSlots sends n GETs to url from clients keep-alive clients and
// counts which colour answered each (X-Slot); an error or a status other
// than 200 is a failure.
func CountSlots(url string, n, clients int) SlotCount {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	var (
		mu   sync.Mutex
		c    = SlotCount{Requests: n, Slots: map[string]int{}}
		next = make(chan struct{}, n)
		wg   sync.WaitGroup
	)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				slot := ""
				if resp, err := client.Get(url); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						slot = resp.Header.Get("X-Slot")
					}
				}
				mu.Lock()
				if slot == "" {
					c.Failures++
				} else {
					c.Slots[slot]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return c
}
