package nginx

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bgd-dev/bgd/lb"
)

var _ lb.Observer = (*Balancer)(nil)

// latencyBounds are the latency histogram's bounds, the builtin proxy's.
var latencyBounds = []time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, math.MaxInt64,
}

// accessLog follows the JSON access log that the default template has
// nginx write (lb.nginx.access_log), counting each upstream address's
// attempts from the first Observe on.
type accessLog struct {
	mu     sync.Mutex
	path   string
	offset int64
	opened bool
	counts map[string]*lb.Observation // by upstream address
}

// logLine is one line of the access log: nginx's $upstream_addr,
// $upstream_status and $upstream_response_time, each a list when nginx
// tried several servers ("127.0.0.1:5005, 127.0.0.1:5006").
type logLine struct {
	Addr   string `json:"addr"`
	Status string `json:"status"`
	Time   string `json:"time"`
}

// Observe counts what the access log says of u's address since bgd first
// asked (the counts start at that call, at the end of the log): every
// attempt nginx made at the slot is a request; an attempt answered 5xx or
// not at all ("-", or an address nginx could not connect to) is an error.
// The latency histogram is built from $upstream_response_time. Without
// lb.nginx.access_log there is nothing to read: an error says so.
func (b *Balancer) Observe(ctx context.Context, u lb.Upstream) (lb.Observation, error) {
	if b.cfg.AccessLog == "" {
		return lb.Observation{}, errors.New("nginx: no lb.nginx.access_log: set it so that nginx logs what bgd's analysis reads")
	}
	b.logOnce.Do(func() { b.log = &accessLog{path: b.cfg.AccessLog, counts: map[string]*lb.Observation{}} })
	return b.log.observe(u.Addr())
}

func (l *accessLog) observe(addr string) (lb.Observation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.read(); err != nil {
		return lb.Observation{}, err
	}
	o, ok := l.counts[addr]
	if !ok {
		return lb.Observation{Buckets: emptyBuckets()}, nil
	}
	c := *o
	c.Buckets = append([]lb.Bucket(nil), o.Buckets...)
	return c, nil
}

// read counts the lines written since the last read. The first read only
// finds the end. A log shorter than what was read (rotated, truncated) is
// read from its start.
func (l *accessLog) read() error {
	f, err := os.Open(l.path)
	if errors.Is(err, os.ErrNotExist) && !l.opened {
		l.opened = true // nginx creates it with its first request
		return nil
	}
	if err != nil {
		return fmt.Errorf("nginx: access log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("nginx: access log: %w", err)
	}
	if !l.opened {
		l.opened, l.offset = true, fi.Size()
		return nil
	}
	if fi.Size() < l.offset {
		l.offset = 0
	}
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return fmt.Errorf("nginx: access log: %w", err)
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			// A last line without its newline is still being written: read
			// it next time.
			return nil
		}
		l.offset += int64(len(line))
		var ll logLine
		if json.Unmarshal(line, &ll) == nil {
			l.add(ll)
		}
	}
}

// add counts each attempt of one request.
func (l *accessLog) add(ll logLine) {
	addrs, statuses, times := split(ll.Addr), split(ll.Status), split(ll.Time)
	for i, addr := range addrs {
		o := l.counts[addr]
		if o == nil {
			o = &lb.Observation{Buckets: emptyBuckets()}
			l.counts[addr] = o
		}
		o.Requests++
		status := 0
		if i < len(statuses) {
			status, _ = strconv.Atoi(statuses[i])
		}
		if status == 0 || status >= 500 {
			o.Errors++
		}
		if i < len(times) {
			if s, err := strconv.ParseFloat(times[i], 64); err == nil {
				d := time.Duration(s * float64(time.Second))
				o.Sum += d
				for j := range o.Buckets {
					if d <= o.Buckets[j].LE {
						o.Buckets[j].Count++
					}
				}
			}
		}
	}
}

// split reads one of nginx's upstream lists: "a, b : c" (':' separates
// the servers of an internal redirect) is a, b, c.
func split(s string) []string {
	var out []string
	for _, group := range strings.Split(s, " : ") {
		for _, v := range strings.Split(group, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

func emptyBuckets() []lb.Bucket {
	out := make([]lb.Bucket, len(latencyBounds))
	for i, le := range latencyBounds {
		out[i].LE = le
	}
	return out
}
