// Command loader drives HTTP load from inside the test container and records
// when requests failed, so the systemd tests can measure how long a killed
// slot or proxy kept requests failing. The tests build it (CGO_ENABLED=0)
// and copy it into the container beside bgd.
//
//	loader -url http://127.0.0.1:18080/ -c 4 -d 10s -out /tmp/load.json
//
// Every request opens a new connection (a killed proxy is then seen as a
// refused connection, never hidden by a kept-alive one) and is never
// retried. It writes one JSON object: requests sent, failed, and the
// outages: each run of consecutive failures, from the first failed
// request's start to the next successful request's end, in Unix
// nanoseconds, so the test can compare them with the moment of a kill.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

type sample struct {
	start, end int64
	ok         bool
	err        string
}

// Outage is one run of failed requests, ended by the first success after it
// (Recovered 0: the run lasted to the end of the load).
type Outage struct {
	FirstFail int64  `json:"first_fail_ns"`
	Recovered int64  `json:"recovered_ns"`
	Failed    int    `json:"failed"`
	Error     string `json:"error"`
}

// Report is what the loader writes.
type Report struct {
	Sent    int      `json:"sent"`
	Failed  int      `json:"failed"`
	Outages []Outage `json:"outages"`
	Slots   []string `json:"slots"`
}

func main() {
	url := flag.String("url", "", "URL to request (GET)")
	conc := flag.Int("c", 4, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "how long to send requests")
	pause := flag.Duration("pause", 2*time.Millisecond, "pause between one client's requests")
	out := flag.String("out", "", "file for the JSON report (default stdout)")
	flag.Parse()
	if *url == "" || *conc < 1 || *dur <= 0 {
		fmt.Fprintln(os.Stderr, "loader: -url, -c >= 1 and -d > 0 are needed")
		os.Exit(2)
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var (
		mu      sync.Mutex
		samples []sample
		slots   = map[string]bool{}
		wg      sync.WaitGroup
	)
	deadline := time.Now().Add(*dur)
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				s := sample{start: time.Now().UnixNano()}
				resp, err := client.Get(*url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						s.ok = true
					} else {
						s.err = resp.Status
					}
				} else {
					s.err = err.Error()
				}
				s.end = time.Now().UnixNano()
				mu.Lock()
				samples = append(samples, s)
				if resp != nil {
					if slot := resp.Header.Get("X-Bgd-Slot"); slot != "" {
						slots[slot] = true
					}
				}
				mu.Unlock()
				time.Sleep(*pause)
			}
		}()
	}
	wg.Wait()
	r := report(samples)
	for s := range slots {
		r.Slots = append(r.Slots, s)
	}
	sort.Strings(r.Slots)
	b, _ := json.Marshal(r)
	if *out == "" {
		fmt.Println(string(b))
		return
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "loader:", err)
		os.Exit(1)
	}
}

// report folds the samples, ordered by start, into counts and outages.
func report(samples []sample) Report {
	sort.Slice(samples, func(i, j int) bool { return samples[i].start < samples[j].start })
	r := Report{Sent: len(samples), Outages: []Outage{}, Slots: []string{}}
	var cur *Outage
	for _, s := range samples {
		if !s.ok {
			r.Failed++
			if cur == nil {
				r.Outages = append(r.Outages, Outage{FirstFail: s.start, Error: s.err})
				cur = &r.Outages[len(r.Outages)-1]
			}
			cur.Failed++
			continue
		}
		if cur != nil {
			cur.Recovered = s.end
			cur = nil
		}
	}
	return r
}
