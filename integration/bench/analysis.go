package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// AutoRollback is one deploy of a release that answers 20% of requests
// 500 while passing its health checks (figure 9): how long its bad
// answers lasted, seen by the clients, until bgd's analysis rolled it back.
type AutoRollback struct {
	ExitCode int `json:"exit_code"`
	// BadAnswers is how many 500s the clients got; FirstToLastMs the time
	// between the first and the last (the rollback's effect as clients
	// see it); WallMs the whole `bgd deploy --watch`.
	BadAnswers    int     `json:"bad_answers"`
	Requests      int     `json:"requests"`
	FirstToLastMs float64 `json:"first_to_last_ms"`
	WallMs        float64 `json:"wall_ms"`
}

// GoodWatch is one deploy of a good release with --watch: whether the
// analysis let it be (exit 0).
type GoodWatch struct {
	ExitCode int     `json:"exit_code"`
	WallMs   float64 `json:"wall_ms"`
}

// autoRollbacks: figure 9. Bad releases deployed with --watch under load
// must be rolled back by bgd itself; good ones must never be.
func (b *bench) autoRollbacks(ctx context.Context, s *service, dr *DriverResult) error {
	bad, good, watch := 5, 20, "2s"
	if b.o.short {
		bad, good, watch = 1, 2, "1s"
	}
	// A judgement every 200 ms once 20 requests were answered, above 5%
	// errors rolls back; the demo app answers 20% of requests 500 for the
	// release "bad" only.
	cfg, err := s.variant("bgd-analysis.yml", map[string]any{
		"analysis": map[string]any{"interval": "200ms", "min_requests": 20, "max_error_rate": 0.05},
		"env":      map[string]string{"DEMO_ERROR_RATE": `{{if eq .Release "bad"}}0.2{{else}}0{{end}}`}})
	if err != nil {
		return err
	}
	for i := range good {
		r, err := b.expect(ctx, s.dir, anyExit, "--json", "--config", cfg, "deploy", "--release", fmt.Sprintf("good%02d", i+1), "--watch", watch)
		if err != nil {
			return err
		}
		dr.GoodWatches = append(dr.GoodWatches, GoodWatch{ExitCode: r.Code, WallMs: ms(r.Wall)})
		if r.Code != 0 {
			dr.Notes = append(dr.Notes, "a good release was not kept: "+strings.TrimSpace(r.Stderr))
		}
		if i%2 == 0 && i < bad*2 {
			ar, err := b.badDeploy(ctx, s, cfg)
			if err != nil {
				return err
			}
			dr.AutoRollbacks = append(dr.AutoRollbacks, ar)
		}
	}
	return nil
}

// badDeploy deploys the bad release with --watch 20s while 4 keep-alive
// clients count the 500s they get.
func (b *bench) badDeploy(ctx context.Context, s *service, cfg string) (AutoRollback, error) {
	var (
		mu          sync.Mutex
		first, last time.Time
		bad         int
		requests    atomic.Int64
		stop        = make(chan struct{})
		wg          sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(s.url)
				requests.Add(1)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode >= 500 {
					now := time.Now()
					mu.Lock()
					if bad == 0 {
						first = now
					}
					bad, last = bad+1, now
					mu.Unlock()
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	r, err := b.expect(ctx, s.dir, anyExit, "--json", "--config", cfg, "deploy", "--release", "bad", "--watch", "20s")
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err != nil {
		return AutoRollback{}, err
	}
	ar := AutoRollback{ExitCode: r.Code, BadAnswers: bad, Requests: int(requests.Load()), WallMs: ms(r.Wall)}
	if bad > 0 {
		ar.FirstToLastMs = ms(last.Sub(first))
	}
	if by, err := ts.AnsweredBy(s.url); r.Code != 1 || err != nil || by == "" {
		return ar, fmt.Errorf("the bad release was not rolled back (exit %d, answered by %q, %v): %s", r.Code, by, err, strings.TrimSpace(r.Stderr))
	}
	return ar, nil
}

// analysisTable renders figure 9.
func (r *Results) analysisTable(b *strings.Builder) {
	var rows [][]string
	for d, dr := range r.drivers {
		ar := dr.AutoRollbacks
		if len(ar)+len(dr.GoodWatches) == 0 {
			continue
		}
		rows = append(rows, []string{d,
			fmt.Sprintf("%d of %d", count(ar, func(a AutoRollback) bool { return a.ExitCode == 1 }), len(ar)),
			medMax(pick(ar, func(a AutoRollback) float64 { return a.FirstToLastMs }), " ms"),
			medMax(pick(ar, func(a AutoRollback) float64 { return float64(a.BadAnswers) }), ""),
			medMax(pick(ar, func(a AutoRollback) float64 { return a.WallMs }), " ms"),
			fmt.Sprintf("%d of %d", count(dr.GoodWatches, func(g GoodWatch) bool { return g.ExitCode == 0 }), len(dr.GoodWatches))})
	}
	if len(rows) > 0 {
		table(b, "Automatic rollback (figure 9): a release answering 20% of requests 500, `deploy --watch 20s`, 4 keep-alive clients; analysis every 200 ms, over 5% errors after 20 requests rolls back",
			[]string{"driver", "bad releases rolled back", "first to last bad answer", "bad answers", "deploy wall time", "good releases kept (--watch)"}, rows)
	}
}

func count[T any](xs []T, f func(T) bool) (n int) {
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}
