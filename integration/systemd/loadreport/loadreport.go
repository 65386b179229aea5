// Package loadreport is the report of the systemd tests' load generator
// (integration/systemd/testdata/loader, run inside the test container):
// requests sent and failed, and the outages, each run of failed requests,
// so that a test can tell how long a kill kept requests failing.
package loadreport

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Sample is one request: when it started and ended (Unix nanoseconds),
// and why it failed ("" for a 200).
type Sample struct {
	Start, End int64
	Err        string
}

// Outage is one run of failed requests, from the first failed request's
// start to the end of the first successful request after it (Recovered 0:
// the run lasted to the end of the load).
type Outage struct {
	FirstFail int64  `json:"first_fail_ns"`
	Recovered int64  `json:"recovered_ns"`
	Failed    int    `json:"failed"`
	Error     string `json:"error"`
}

// Report is what the loader writes as JSON.
type Report struct {
	Sent    int      `json:"sent"`
	Failed  int      `json:"failed"`
	Outages []Outage `json:"outages"`
	// Slots are the X-Slot values (the demo app's colour) the answers carried.
	Slots []string `json:"slots"`
}

// Fold orders the samples by start and folds them into counts and outages.
func Fold(samples []Sample) Report {
	sort.Slice(samples, func(i, j int) bool { return samples[i].Start < samples[j].Start })
	r := Report{Sent: len(samples), Outages: []Outage{}, Slots: []string{}}
	open := false
	for _, s := range samples {
		if s.Err != "" {
			r.Failed++
			if !open {
				r.Outages = append(r.Outages, Outage{FirstFail: s.Start, Error: s.Err})
				open = true
			}
			r.Outages[len(r.Outages)-1].Failed++
			continue
		}
		if open {
			r.Outages[len(r.Outages)-1].Recovered = s.End
			open = false
		}
	}
	return r
}

// After is how long requests failed after the moment at (one fault per
// load): from at to the end of the last outage that had not ended by then
// (a request in flight at the moment of a kill fails, although it started
// before), 0 when none had, -1 when one lasted to the end of the load; and
// how many requests those outages failed.
func (r Report) After(at time.Time) (time.Duration, int) {
	var last time.Duration
	failed := 0
	for _, o := range r.Outages {
		if o.Recovered != 0 && o.Recovered <= at.UnixNano() {
			continue
		}
		failed += o.Failed
		if o.Recovered == 0 {
			return -1, failed
		}
		last = max(last, time.Duration(o.Recovered-at.UnixNano()))
	}
	return last, failed
}

// Describe lists the outages relative to at, for a test's log.
func (r Report) Describe(at time.Time) string {
	var b strings.Builder
	for _, o := range r.Outages {
		end := "the end"
		if o.Recovered != 0 {
			end = time.Duration(o.Recovered - at.UnixNano()).Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, "[%s .. %s: %d failed, %s] ", time.Duration(o.FirstFail-at.UnixNano()).Round(time.Millisecond), end, o.Failed, o.Error)
	}
	return strings.TrimSpace(b.String())
}
