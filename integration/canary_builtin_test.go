package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/state"
)

// canaryRig is a real `bgd proxy` process in front of two real demo-app
// slot processes, following a state file that the test writes as the
// orchestrator does before it asks the driver (builtin.Balancer) to confirm.
type canaryRig struct {
	t         *testing.T
	store     *state.Store
	bal       *builtin.Balancer
	proxyPort int
	proxyLog  string
}

func newCanaryRig(t *testing.T) *canaryRig {
	t.Helper()
	dir := t.TempDir()
	proxyPort, bluePort, greenPort := freePort(t), freePort(t), freePort(t)
	blue := startDemoApp(t, bluePort, "blue", "r1")
	green := startDemoApp(t, greenPort, "green", "r2")
	cfg := writeConfig(t, dir, "bluegreen.yml",
		fmt.Sprintf(`[%q, "demo-app", "--port", "{{.Port}}", "--color", "{{.Color}}", "--release", "{{.Release}}"]`, bgdBin),
		proxyPort, bluePort, greenPort, "")
	statePath := filepath.Join(dir, ".local_context", "bg_state.json")
	if err := os.MkdirAll(filepath.Dir(statePath), 0o750); err != nil {
		t.Fatal(err)
	}
	r := &canaryRig{t: t, store: &state.Store{Path: statePath}, proxyPort: proxyPort, proxyLog: filepath.Join(dir, "proxy.log")}
	st := state.New(bluePort, greenPort)
	st.BluePID, st.GreenPID = blue.Process.Pid, green.Process.Pid
	st.BlueHealthy, st.GreenHealthy = true, true
	st.BlueRelease, st.GreenRelease = "r1", "r2"
	if err := r.store.Save(st); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(r.proxyLog)
	if err != nil {
		t.Fatal(err)
	}
	proxy := exec.Command(bgdBin, "--config", cfg, "proxy")
	proxy.Dir, proxy.Stdout, proxy.Stderr = dir, logf, logf
	started, err := testsupport.Start("bgd proxy", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		started.Stop(syscall.SIGTERM, 5*time.Second)
		logf.Close()
	})
	// The config leaves admin_listen out: the admin socket beside the state file.
	r.bal = &builtin.Balancer{Listen: fmt.Sprintf("127.0.0.1:%d", proxyPort), StatePath: statePath,
		Admin: "unix:" + filepath.Join(filepath.Dir(statePath), "app.admin.sock")}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := r.bal.Route(context.Background()); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("bgd proxy does not answer after 5s: %v\n%s", err, r.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

func (r *canaryRig) log() string {
	b, _ := os.ReadFile(r.proxyLog)
	return string(b)
}

// route writes the routing (active colour; a canary of the other colour at
// weight when weight > 0) with the next generation, as the orchestrator
// does, and has the driver confirm it from the proxy.
func (r *canaryRig) route(active config.Color, weight int, sticky bool) {
	r.t.Helper()
	st, err := r.store.Load()
	if err != nil {
		r.t.Fatal(err)
	}
	standby := active.Other()
	st.ActiveVersion, st.Canary = active, nil
	st.Generation++
	rt := lb.Route{
		Service:    "app",
		Active:     lb.Upstream{Color: active, Host: lb.LocalHost, Port: st.Slot(active).Port},
		Standby:    lb.Upstream{Color: standby, Host: lb.LocalHost, Port: st.Slot(standby).Port},
		HealthPath: "/health",
		Generation: st.Generation,
	}
	if weight > 0 {
		st.Canary = &state.Canary{Color: standby, Weight: weight, Sticky: sticky, Started: state.Now()}
		rt.Active.Weight, rt.Standby.Weight, rt.Sticky = 100-weight, weight, sticky
	}
	if err := r.store.Save(st); err != nil {
		r.t.Fatal(err)
	}
	if err := r.bal.Flip(context.Background(), rt); err != nil {
		r.t.Fatalf("Flip to %s, canary weight %d, sticky %v: %v\nproxy log:\n%s", active, weight, sticky, err, r.log())
	}
}

// count sends n GETs from workers keep-alive clients and returns the 200
// answers by the colour that served them (the demo app's X-Slot, which
// must be the proxy's X-Bgd-Slot) and every other outcome as a failure.
func (r *canaryRig) count(n, workers int) (map[string]int, []string) {
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.proxyPort)
	var mu sync.Mutex
	slots := map[string]int{}
	var failures []string
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for next.Add(1) <= int64(n) {
				a, err := func() (string, error) {
					resp, err := c.Get(url)
					if err != nil {
						return "", err
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					slot, served := resp.Header.Get("X-Slot"), resp.Header.Get("X-Bgd-Slot")
					switch {
					case err != nil:
						return "", err
					case resp.StatusCode != http.StatusOK:
						return "", fmt.Errorf("status %d: %q", resp.StatusCode, body)
					case slot == "" || slot != served || !strings.HasPrefix(string(body), "demo app: color="+slot):
						return "", fmt.Errorf("X-Slot %q, X-Bgd-Slot %q, body %q", slot, served, body)
					}
					return slot, nil
				}()
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					slots[a]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return slots, failures
}

// TestCanaryBuiltinShare: through the real proxy to real slot processes,
// the canary's share of 10 000 requests is its weight within 2 points, at
// 10 and at 50.
func TestCanaryBuiltinShare(t *testing.T) {
	r := newCanaryRig(t)
	const n = 10000
	for _, weight := range []int{10, 50} {
		r.route(config.Blue, weight, false)
		start := time.Now()
		slots, failures := r.count(n, 8)
		took := time.Since(start)
		if len(failures) > 0 {
			t.Fatalf("weight %d: %d of %d requests failed, first: %q", weight, len(failures), n, failures[:min(5, len(failures))])
		}
		share := 100 * float64(slots["green"]) / n
		t.Logf("bgd proxy, weight %d: canary green served %d of %d = %.2f%% (blue %d) in %s",
			weight, slots["green"], n, share, slots["blue"], took.Round(time.Millisecond))
		if share < float64(weight)-2 || share > float64(weight)+2 {
			t.Errorf("weight %d: the canary served %.2f%%, want %d±2%%", weight, share, weight)
		}
	}
}

// TestCanaryBuiltinSticky: in a sticky split, a client without the cookie
// gets one naming the colour that served it, and a client with the cookie
// gets its colour on 200 consecutive requests.
func TestCanaryBuiltinSticky(t *testing.T) {
	r := newCanaryRig(t)
	r.route(config.Blue, 10, true)
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.proxyPort)
	name := lb.StickyCookie("app")
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	do := func(cookie string) (string, []string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: name, Value: cookie})
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Slot"), resp.Header.Values("Set-Cookie")
	}
	slot, cookies := do("")
	if want := name + "=" + slot + "; Path=/; HttpOnly; SameSite=Lax"; len(cookies) != 1 || cookies[0] != want {
		t.Fatalf("a client without the cookie, served by %s: Set-Cookie %q, want %q", slot, cookies, want)
	}
	for _, color := range []string{"green", "blue"} {
		for i := range 200 {
			if slot, cookies := do(color); slot != color || len(cookies) != 0 {
				t.Fatalf("request %d with cookie %s=%s: served by %s, Set-Cookie %q; want %s, none", i+1, name, color, slot, cookies, color)
			}
		}
	}
}

// TestCanaryBuiltinWeightsUnderLoad: keep-alive clients (POSTs, never
// replayed by Go's transport) run while the split goes 5, 20, 50, then an
// abort (blue only), a new split, and a promote (green only): not one
// request fails, and every change is confirmed by the proxy.
func TestCanaryBuiltinWeightsUnderLoad(t *testing.T) {
	r := newCanaryRig(t)
	load := testsupport.StartLoad(fmt.Sprintf("http://127.0.0.1:%d/", r.proxyPort), testsupport.LoadOptions{Clients: 8, KeepAlive: true})
	t.Cleanup(func() { load.Stop() })
	steps := []struct {
		active config.Color
		weight int
		sticky bool
	}{{config.Blue, 5, false}, {config.Blue, 20, true}, {config.Blue, 50, false}, {config.Blue, 0, false},
		{config.Blue, 30, false}, {config.Blue, 70, true}, {config.Green, 0, false}}
	start := time.Now()
	for _, s := range steps {
		time.Sleep(200 * time.Millisecond)
		r.route(s.active, s.weight, s.sticky)
	}
	time.Sleep(200 * time.Millisecond)
	c := load.Stop()
	t.Logf("bgd proxy, %d routing changes in %s under load: %s", len(steps), time.Since(start).Round(time.Millisecond), c)
	if c.Failures != 0 {
		t.Fatalf("requests failed while the weights changed: %s\nproxy log:\n%s", c, r.log())
	}
	if c.Requests < 1000 || c.Slots["blue"] == 0 || c.Slots["green"] == 0 {
		t.Fatalf("the load did not run through both colours: %s", c)
	}
	if slots, failures := r.count(300, 2); len(failures) > 0 || slots["green"] != 300 {
		t.Fatalf("after the promote, want all 300 requests served by green: %v, failures %q", slots, failures)
	}
}
