package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// dpTarget is one way to reach the data-plane backend.
type dpTarget struct {
	name, url string
}

func (t dpTarget) String() string { return t.name }

// dataPlane: figure 5 and the first half of figure 7. One demo app is the
// backend of all: wrk loads it directly, then through the builtin proxy
// (`bgd proxy`, as systemd runs it), Go's plain reverse proxy, nginx and
// HAProxy (both configured by `bgd switch blue`), in interleaved rounds.
func (b *bench) dataPlane(ctx context.Context) error {
	dp := &DataPlane{Unavailable: map[string]string{}, Runs: map[string][]ts.WrkResult{}}
	b.res.DataPlane = dp
	dir := filepath.Join(b.work, "dataplane")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var appPort, standby, plainPort int
	if b.haDP != nil {
		appPort, standby = b.haDP.blue, b.haDP.grn
	} else if err := freePorts(&appPort, &standby); err != nil {
		return err
	}
	if err := freePorts(&plainPort); err != nil {
		return err
	}
	if _, err := b.startOwn(dir, "demo-app", "", appPort, demoApp(b.bgd, appPort, "blue", "dp")...); err != nil {
		return err
	}
	targets := []dpTarget{{"direct", loopURL(appPort)}}
	var proxy *ts.Proc
	for _, d := range []string{"builtin", "nginx", "haproxy"} {
		if d != "builtin" && !b.wants(d) {
			continue
		}
		if why := b.lbErr[d]; why != "" {
			dp.Unavailable[d] = why
			continue
		}
		lb, port, err := b.front(d, "dp")
		if err != nil {
			return err
		}
		cfg, state := filepath.Join(dir, d+".yml"), filepath.Join(dir, d, "state")
		if err := writeConfig(cfg, state, map[string]any{"dp": serviceConfig(demoCommand(b.bgd), appPort, standby, lb)}); err != nil {
			return err
		}
		if d == "builtin" {
			// The proxy in the foreground, as systemd runs it, routing to
			// blue as the (absent) state file's defaults say; then Go's own
			// reverse proxy, plain, beside it.
			os.MkdirAll(state, 0o755)
			if proxy, err = b.startOwn(dir, "bgd proxy", "proxy.log", port, b.bgd, "--config", cfg, "proxy"); err != nil {
				return err
			}
			if _, err := b.startOwn(dir, plainProxyArg, "plain-proxy.log", plainPort,
				b.exe, plainProxyArg, fmt.Sprintf("127.0.0.1:%d", plainPort), loopURL(appPort)); err != nil {
				return err
			}
			targets = append(targets, dpTarget{d, loopURL(port)}, dpTarget{"httputil", loopURL(plainPort)})
			continue
		}
		// nginx and HAProxy are configured by bgd itself.
		if _, err := b.expect(ctx, dir, 0, "--config", cfg, "switch", "blue"); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
		targets = append(targets, dpTarget{d, loopURL(port)})
	}
	for _, t := range targets {
		if err := ts.WaitAnswer(t.url, "blue", 10*time.Second, 50*time.Millisecond); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	err := rounds(b.o.dpRounds, targets, false, func(t dpTarget, round int) error {
		res, err := b.fixedLoad(ctx, t.url, round)
		if err == nil && round > 0 {
			dp.Runs[t.name] = append(dp.Runs[t.name], res)
			b.log.Info("data plane", "target", t.name, "round", round, "rps", int(res.RPS), "p50_ms", res.P50Ms, "p99_ms", res.P99Ms, "failures", res.Failures)
		}
		return err
	})
	if err != nil {
		return err
	}
	if dp.ProxyHWMKB, err = procStatusKB(proxy.Pid(), "VmHWM"); err != nil {
		return err
	}
	dp.ProxyRSSKB, _ = procStatusKB(proxy.Pid(), "VmRSS")
	return nil
}

// rounds runs round 0, an unrecorded warm-up (connection pools, heap
// growth), then n rounds; each round runs f for every target in turn, so
// that a noisy neighbour weighs on every target alike. abba reverses the
// order every other round, so that no target always goes first.
func rounds[T any](n int, targets []T, abba bool, f func(t T, round int) error) error {
	for round := range n + 1 {
		order := targets
		if abba && round%2 == 0 {
			order = slices.Clone(targets)
			slices.Reverse(order)
		}
		for _, t := range order {
			if err := f(t, round); err != nil {
				return fmt.Errorf("%v round %d: %w", t, round, err)
			}
		}
	}
	return nil
}

// fixedLoad runs wrk at full speed (no pacing) against url for the
// round's time (round 0, the warm-up: at most 1 s).
func (b *bench) fixedLoad(ctx context.Context, url string, round int) (ts.WrkResult, error) {
	d := b.o.dpDuration
	if round == 0 {
		d = min(time.Second, d/2)
	}
	w, err := b.startWrk(url, ts.WrkLoad{Conns: b.o.dpConns})
	if err != nil {
		return ts.WrkResult{}, err
	}
	serr := sleepCtx(ctx, d)
	res, err := w.Stop()
	return res, cmp.Or(serr, err)
}

// plainProxyArg makes this harness a plain net/http/httputil.ReverseProxy
// to one backend: the data-plane figure's "httputil" row, what Go's own
// reverse proxy costs, so that the builtin proxy's row shows what bgd adds
// to it. Its transport keeps as many idle connections per host as the
// builtin proxy's (256); everything else is Go's default.
const plainProxyArg = "plain-proxy"

func plainProxy(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bench plain-proxy LISTEN BACKEND-URL")
		return 2
	}
	target, err := url.Parse(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "plain-proxy:", err)
		return 2
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "plain-proxy:", err)
		return 1
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target); r.SetXForwarded() },
		Transport: &http.Transport{Proxy: nil, MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}
	fmt.Fprintln(os.Stderr, "plain-proxy:", srv.Serve(ln))
	return 1
}
