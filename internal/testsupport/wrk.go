package testsupport

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

// The load generator of the benchmark is wrk (Debian's package, installed
// by .ci/run): it is C on an event loop, so on a 2-core host it leaves the
// proxies most of the CPU, and it never retries a failed request: a reset,
// an EOF or a refused connect is counted as a read, write or connect error.
// Go's transport, by contrast, silently replays a request that failed on a
// reused connection before anything was written, even a POST whose body can
// be rewound.

// WrkResult is one wrk run. Failures are every request that did not get a
// 2xx: non-2xx answers and transport errors (connect, read, write, timeout).
type WrkResult struct {
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

// WrkLoad says how one wrk process loads its target.
type WrkLoad struct {
	Conns int
	// NewConn sends "Connection: close": every request on a new connection.
	NewConn bool
	// Delay between a response and the next request on a connection: it
	// paces the load so that bgd's own processes still get CPU.
	// 0: as fast as possible, without the per-response script hook.
	Delay time.Duration
}

// WrkMarker starts the line of JSON the script's done() prints.
const WrkMarker = "BENCH-JSON "

// WrkScript is the Lua script of a load: done() prints the summary as JSON;
// with a delay, response() also counts non-2xx answers (wrk itself only
// counts status >= 400) and delay() paces the connection.
func WrkScript(l WrkLoad) string {
	var s strings.Builder
	s.WriteString(`local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
`)
	counted := "-1"
	if l.Delay > 0 {
		fmt.Fprintf(&s, `function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function delay() return %d end
`, max(1, l.Delay.Milliseconds()))
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
`, counted, WrkMarker)
	return s.String()
}

// Wrk is a running wrk; Stop ends it with SIGINT, on which wrk prints its
// results for the time it ran (so a window can end on an event rather than
// on wrk's whole-second -d).
type Wrk struct {
	Proc     *Proc
	out, err bytes.Buffer
	counted  bool
}

// StartWrk writes the load's script into scriptDir and runs wrk (one
// thread, 5 s timeout) against url.
func StartWrk(bin, scriptDir, url string, l WrkLoad) (*Wrk, error) {
	script := filepath.Join(scriptDir, fmt.Sprintf("wrk-c%d-new%v-d%s.lua", l.Conns, l.NewConn, l.Delay))
	if err := os.WriteFile(script, []byte(WrkScript(l)), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-t1", "-c" + strconv.Itoa(l.Conns), "-d600s", "--timeout", "5s", "-s", script}
	if l.NewConn {
		args = append(args, "-H", "Connection: close")
	}
	w := &Wrk{counted: l.Delay > 0}
	cmd := exec.Command(bin, append(args, url)...)
	cmd.Stdout, cmd.Stderr = &w.out, &w.err
	var err error
	if w.Proc, err = Start("wrk", cmd); err != nil {
		return nil, err
	}
	return w, nil
}

// Stop interrupts wrk and returns its results.
func (w *Wrk) Stop() (WrkResult, error) {
	if !w.Proc.Exited() {
		w.Proc.Signal(syscall.SIGINT)
	}
	select {
	case <-w.Proc.Done():
	case <-time.After(5 * time.Second):
		w.Proc.Stop(syscall.SIGKILL, time.Second)
		return WrkResult{}, errors.New("wrk did not stop within 5s of SIGINT")
	}
	return ParseWrk(w.out.String(), w.err.String(), w.counted)
}

// ParseWrk reads the script's JSON line from wrk's stdout; counted says
// whether the script counted non-2xx answers (a load with a delay).
func ParseWrk(stdout, stderr string, counted bool) (WrkResult, error) {
	i := strings.Index(stdout, WrkMarker)
	if i < 0 {
		return WrkResult{}, fmt.Errorf("wrk printed no results: %s%s", stdout, stderr)
	}
	line, _, _ := strings.Cut(stdout[i+len(WrkMarker):], "\n")
	var m map[string]int64
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return WrkResult{}, fmt.Errorf("wrk results %q: %w", line, err)
	}
	res := WrkResult{
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

// WrkVersion is wrk's first line of -v, e.g. "wrk 4.1.0 [epoll] ...".
func WrkVersion(bin string) string { return FirstLine(bin, "-v") }

// FirstLine runs a program and returns the first line of its output
// (stdout and stderr: nginx -v writes to stderr).
func FirstLine(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
