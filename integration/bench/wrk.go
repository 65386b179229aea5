package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The load generator is wrk (Debian's package, installed by .ci/run): it is
// C on an event loop, so on a 2-core host it leaves the proxies most of the
// CPU, and it never retries a failed request: a reset, an EOF or a refused
// connect is counted as a read, write or connect error. Go's transport, by
// contrast, silently replays a request that failed on a reused connection
// before anything was written, even a POST whose body can be rewound.

// wrkResult is one wrk run. Failures are every request that did not get a
// 2xx: non-2xx answers and transport errors (connect, read, write, timeout).
type wrkResult struct {
	DurationS float64 `json:"duration_s"`
	Requests  int64   `json:"requests"` // complete responses, any status
	Connect   int64   `json:"connect_errors"`
	Read      int64   `json:"read_errors"`
	Write     int64   `json:"write_errors"`
	Timeout   int64   `json:"timeouts"`
	Status4xx int64   `json:"status_ge_400"`
	Non2xx    int64   `json:"non_2xx"` // counted by the script; -1 when not counted
	Failures  int64   `json:"failures"`
	RPS       float64 `json:"requests_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
}

// wrkLoad says how one wrk process loads its target.
type wrkLoad struct {
	conns int
	// newConn sends "Connection: close": every request on a new connection.
	newConn bool
	// delay between a response and the next request on a connection: it
	// paces the flip load so that bgd's own processes still get CPU.
	// 0: as fast as possible, without the per-response script hook.
	delay time.Duration
}

const wrkMarker = "BENCH-JSON "

// wrkScript writes the Lua script of a load: done() prints the summary as
// JSON; with a delay, response() also counts non-2xx answers (wrk itself
// only counts status >= 400) and delay() paces the connection.
func wrkScript(dir string, l wrkLoad) (string, error) {
	var s strings.Builder
	s.WriteString(`local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
`)
	if l.delay > 0 {
		fmt.Fprintf(&s, `function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function delay() return %d end
`, max(1, l.delay.Milliseconds()))
	}
	counted := "-1"
	if l.delay > 0 {
		counted = `0
  for _, t in ipairs(threads) do n = n + t:get("non2xx") end
  n = n`
	}
	fmt.Fprintf(&s, `function done(summary, latency, requests)
  local n = %s
  io.write(string.format('%s{"duration_us":%%d,"requests":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"non2xx":%%d,"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.duration, summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, n, latency:percentile(50), latency:percentile(99), latency.max))
end
`, counted, wrkMarker)
	name := fmt.Sprintf("wrk-c%d-new%v-d%s.lua", l.conns, l.newConn, l.delay)
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, []byte(s.String()), 0o644)
}

// wrkRun is a running wrk; stop ends it with SIGINT, on which wrk prints
// its results for the time it ran (so a window can end on an event rather
// than on wrk's whole-second -d).
type wrkRun struct {
	p        *proc
	out, err bytes.Buffer
	counted  bool
}

func startWrk(r *reaper, bin, scriptDir, url string, l wrkLoad) (*wrkRun, error) {
	script, err := wrkScript(scriptDir, l)
	if err != nil {
		return nil, err
	}
	args := []string{"-t1", "-c" + strconv.Itoa(l.conns), "-d600s", "--timeout", "5s", "-s", script}
	if l.newConn {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, url)
	w := &wrkRun{counted: l.delay > 0}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &w.out, &w.err
	if w.p, err = r.start("wrk", cmd); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *wrkRun) stop() (wrkResult, error) {
	if !w.p.exited() {
		syscall.Kill(w.p.pid(), syscall.SIGINT)
	}
	select {
	case <-w.p.done:
	case <-time.After(5 * time.Second):
		w.p.stop(syscall.SIGKILL, time.Second)
		return wrkResult{}, errors.New("wrk did not stop within 5s of SIGINT")
	}
	return parseWrk(w.out.String(), w.err.String(), w.counted)
}

func parseWrk(stdout, stderr string, counted bool) (wrkResult, error) {
	i := strings.Index(stdout, wrkMarker)
	if i < 0 {
		return wrkResult{}, fmt.Errorf("wrk printed no results: %s%s", stdout, stderr)
	}
	line, _, _ := strings.Cut(stdout[i+len(wrkMarker):], "\n")
	var m map[string]int64
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return wrkResult{}, fmt.Errorf("wrk results %q: %w", line, err)
	}
	res := wrkResult{
		DurationS: float64(m["duration_us"]) / 1e6,
		Requests:  m["requests"], Connect: m["connect"], Read: m["read"], Write: m["write"], Timeout: m["timeout"],
		Status4xx: m["status"], Non2xx: -1,
		P50Ms: float64(m["p50_us"]) / 1000, P99Ms: float64(m["p99_us"]) / 1000, MaxMs: float64(m["max_us"]) / 1000,
	}
	bad := res.Status4xx
	if counted {
		res.Non2xx = m["non2xx"]
		bad = res.Non2xx
	}
	res.Failures = bad + res.Connect + res.Read + res.Write + res.Timeout
	if res.DurationS > 0 {
		res.RPS = float64(res.Requests) / res.DurationS
	}
	return res, nil
}

// wrkVersion is wrk's first line of -v, e.g. "wrk 4.1.0 [epoll] ...".
func wrkVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
