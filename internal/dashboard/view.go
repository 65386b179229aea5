package dashboard

import (
	"fmt"
	"slices"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

// MarkedActions are the history actions drawn as markers on the charts.
var MarkedActions = []string{"deploy", "switch", "rollback", "canary", "promote", "abort"}

// View is one service as the page shows it (and ?format=json returns it).
type View struct {
	Service  string        `json:"service"`
	Driver   string        `json:"driver"`
	Now      time.Time     `json:"now"`
	Interval time.Duration `json:"interval_ns"`
	// Active is the recorded active colour.
	Active config.Color `json:"active"`
	Slots  []SlotView   `json:"slots"`
	// Canary is the split in force (nil: none).
	Canary      *state.Canary    `json:"canary,omitempty"`
	LastCheck   *time.Time       `json:"last_check,omitempty"`
	Maintenance bool             `json:"maintenance,omitempty"`
	Paused      *state.Pause     `json:"paused,omitempty"`
	Shadow      bool             `json:"shadow,omitempty"`
	InProgress  *state.Operation `json:"in_progress,omitempty"`
	// Markers are the history events within the charts' time range
	// (MarkedActions, and any auto_rolled_back), oldest first.
	Markers []state.Event `json:"markers"`
	// History is the last events, newest first.
	History []state.Event `json:"history"`
	// Points are the samples, oldest first.
	Points []Point `json:"points"`
	// Errors say why the last sample is incomplete ("" none).
	Errors []string `json:"errors"`
	// Sampled counts the samples taken.
	Sampled uint64 `json:"sampled"`
}

// SlotView is one slot as recorded, with its last interval.
type SlotView struct {
	Color   config.Color `json:"color"`
	Port    int          `json:"port"`
	PID     int          `json:"pid"`
	Release string       `json:"release,omitempty"`
	// Healthy as the state records it (the last check or operation).
	Healthy bool `json:"healthy"`
	Active  bool `json:"active"`
	// Weight is the slot's percentage of new requests.
	Weight int       `json:"weight"`
	Last   SlotPoint `json:"last"`
}

// historyRows is how many events the page lists.
const historyRows = 12

// View returns the named service's view, false when there is none. The
// state part is read now (the series are the sampler's).
func (s *Sampler) View(service string) (View, bool) {
	sr := s.series[service]
	if sr == nil {
		return View{}, false
	}
	fresh, err := sr.src.State()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := View{Service: service, Driver: sr.src.Driver, Now: s.now(), Interval: s.interval,
		Points: sr.points(), Errors: append([]string{}, sr.errs...), Sampled: sr.sampled,
		Markers: []state.Event{}, History: []state.Event{}}
	st := sr.st
	if err == nil {
		st = fresh
	} else {
		v.Errors = append(v.Errors, fmt.Sprintf("state: %v", err))
	}
	if st == nil {
		return v, true
	}
	v.Active, v.Canary, v.LastCheck = st.ActiveVersion, st.Canary, st.LastCheck
	v.Maintenance, v.Paused, v.Shadow, v.InProgress = st.Maintenance, st.Paused, st.Shadow, st.InProgress
	var last *Point
	if len(v.Points) > 0 {
		last = &v.Points[len(v.Points)-1]
	}
	for _, c := range config.Colors {
		sl := st.Slot(c)
		sv := SlotView{Color: c, Port: sl.Port, PID: sl.PID, Release: sl.Release, Healthy: sl.Healthy, Active: c == st.ActiveVersion}
		switch {
		case sv.Active && st.Canary != nil:
			sv.Weight = 100 - st.Canary.Weight
		case sv.Active:
			sv.Weight = 100
		case st.Canary != nil && st.Canary.Color == c:
			sv.Weight = st.Canary.Weight
		}
		if last != nil {
			sv.Last = *last.Slot(c)
		}
		v.Slots = append(v.Slots, sv)
	}
	from, to := v.timeRange()
	for _, e := range st.History {
		if marked(e) && !e.Timestamp.Before(from) && !e.Timestamp.After(to) {
			v.Markers = append(v.Markers, e)
		}
	}
	for i := len(st.History) - 1; i >= 0 && len(v.History) < historyRows; i-- {
		v.History = append(v.History, st.History[i])
	}
	return v, true
}

func marked(e state.Event) bool {
	return slices.Contains(MarkedActions, e.Action) || e.Status == state.StatusAutoRolledBack
}

// timeRange is the charts' x axis: from the first point (at most Keep
// ago) to now, at least ten intervals wide.
func (v *View) timeRange() (time.Time, time.Time) {
	to := v.Now
	from := to.Add(-10 * v.Interval)
	if len(v.Points) > 0 {
		// The first point covers the interval before it.
		if f := v.Points[0].At.Add(-v.Interval); f.Before(from) {
			from = f
		}
	}
	return from, to
}
