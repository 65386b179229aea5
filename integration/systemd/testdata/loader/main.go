// Command loader drives HTTP load from inside the test container and records
// when requests failed, so the systemd tests can measure how long a killed
// slot or proxy kept requests failing. The tests build it (CGO_ENABLED=0)
// and copy it into the container beside bgd.
//
//	loader -url http://127.0.0.1:18080/ -c 4 -d 10s -out /tmp/load.json
//
// Every request opens a new connection (a killed proxy is then seen as a
// refused connection, never hidden by a kept-alive one) and is never
// retried. It writes one JSON object, a loadreport.Report: requests sent,
// failed, and the outages (runs of failed requests, in Unix nanoseconds),
// so the test can compare them with the moment of a kill.
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

	"github.com/bgd-dev/bgd/integration/systemd/loadreport"
)

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
		samples []loadreport.Sample
		slots   = map[string]bool{}
		wg      sync.WaitGroup
	)
	deadline := time.Now().Add(*dur)
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				s := loadreport.Sample{Start: time.Now().UnixNano()}
				resp, err := client.Get(*url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						s.Err = resp.Status
					}
				} else {
					s.Err = err.Error()
				}
				s.End = time.Now().UnixNano()
				mu.Lock()
				samples = append(samples, s)
				if resp != nil {
					if slot := resp.Header.Get("X-Slot"); slot != "" {
						slots[slot] = true
					}
				}
				mu.Unlock()
				time.Sleep(*pause)
			}
		}()
	}
	wg.Wait()
	r := loadreport.Fold(samples)
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
