package state

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Totals are counts over the whole life of a state file, which the history
// (MaxHistory entries) cannot give: they only grow, so that Prometheus
// counters built on them (bgd_deploys_total, bgd_flips_total...) never go
// back.
type Totals struct {
	// Events counts every history entry ever recorded, by action (its first
	// word: an interrupted "deploy --release v2" is a deploy) and status.
	Events map[string]map[string]uint64 `json:"events"`
	// Flips counts the times all traffic moved from one colour to the other
	// (a deploy's flip, a switch, a rollback, a promote, a failover); a
	// canary's weight and a flip back after a failed one do not count.
	Flips uint64 `json:"flips"`
	// LastDeploy is the outcome of the last deploy; nil: none recorded
	// since the totals began.
	LastDeploy *DeployOutcome `json:"last_deploy,omitempty"`
}

// DeployOutcome is when a deploy ended, how, and how long it took.
type DeployOutcome struct {
	// Ended is the time of the deploy's last history entry: its flip (or,
	// with --no-switch, its new slot healthy), its automatic rollback, its
	// canary's last step, promote or abort, or its failure.
	Ended time.Time `json:"ended"`
	// Status is that entry's: success, failed, auto_rolled_back.
	Status string `json:"status"`
	// Duration is from the deploy's start to Ended; 0 when unknown (a
	// deploy that was interrupted, found by a later command).
	Duration time.Duration `json:"duration_ns"`
}

// Bounds of Totals.Events in a file: bgd records a dozen actions and four
// statuses; anything beyond is a hand-made file.
const (
	maxTotalActions  = 64
	maxTotalStatuses = 16
)

// Count returns how many history entries of action (first word) with
// status were ever recorded.
func (t *Totals) Count(action, status string) uint64 {
	if t == nil {
		return 0
	}
	return t.Events[action][status]
}

// CountStatus returns how many history entries with status were ever
// recorded, whatever their action.
func (t *Totals) CountStatus(status string) uint64 {
	if t == nil {
		return 0
	}
	var n uint64
	for _, byStatus := range t.Events {
		n += byStatus[status]
	}
	return n
}

// actionKey is the action an entry is counted under: Action's first word
// (the CLI records an interrupted command as its whole command line).
func actionKey(action string) string {
	if f := strings.Fields(action); len(f) > 0 {
		return f[0]
	}
	return ""
}

// count adds e to the totals.
func (t *Totals) count(e Event) {
	if t.Events == nil {
		t.Events = map[string]map[string]uint64{}
	}
	a := actionKey(e.Action)
	if t.Events[a] == nil {
		t.Events[a] = map[string]uint64{}
	}
	t.Events[a][e.Status]++
}

// totals returns s.Totals, made on first use from the history the file
// already has (a file written before the totals existed): those entries
// are counted once, the older ones it dropped are lost.
func (s *State) totals() *Totals {
	if s.Totals == nil {
		s.Totals = s.CurrentTotals()
	}
	return s.Totals
}

// CurrentTotals returns s.Totals, or, for a file that has none yet, the
// totals of its history (its last deploy without a duration); never nil.
// It changes nothing.
func (s *State) CurrentTotals() *Totals {
	if s.Totals != nil {
		return s.Totals
	}
	t := &Totals{}
	for _, e := range s.History {
		t.count(e)
		if actionKey(e.Action) == "deploy" {
			t.LastDeploy = &DeployOutcome{Ended: e.Timestamp, Status: e.Status}
		}
	}
	return t
}

// countEvent adds e to the totals. The last deploy is the latest entry a
// deploy this process runs (in_progress) recorded, whatever its action (a
// deploy's flip, then its automatic rollback; a canary's steps, then its
// promote or abort), with its duration since the deploy began; or a deploy
// entry recorded otherwise (one found interrupted), without a duration.
func (s *State) countEvent(e Event) {
	t := s.totals()
	t.count(e)
	p := s.InProgress
	mine := p != nil && p.PID == os.Getpid() && actionKey(p.Command) == "deploy"
	if !mine && actionKey(e.Action) != "deploy" {
		return
	}
	out := &DeployOutcome{Ended: e.Timestamp, Status: e.Status}
	if mine && !p.Started.After(e.Timestamp) {
		out.Duration = e.Timestamp.Sub(p.Started)
	}
	t.LastDeploy = out
}

// CountFlip counts a move of all traffic from one colour to another
// (Totals.Flips): the caller calls it once the load balancer confirmed it.
func (s *State) CountFlip() { s.totals().Flips++ }

// clone is a deep copy of t.
func (t *Totals) clone() *Totals {
	if t == nil {
		return nil
	}
	c := &Totals{Flips: t.Flips, LastDeploy: clonePtr(t.LastDeploy)}
	if t.Events != nil {
		c.Events = make(map[string]map[string]uint64, len(t.Events))
		for a, byStatus := range t.Events {
			m := make(map[string]uint64, len(byStatus))
			for k, v := range byStatus {
				m[k] = v
			}
			c.Events[a] = m
		}
	}
	return c
}

// validateTotals bounds what a file's totals may hold.
func validateTotals(st *State) error {
	t := st.Totals
	if t == nil {
		return nil
	}
	if len(t.Events) > maxTotalActions {
		return fmt.Errorf("totals.events has %d actions; bgd records far fewer (at most %d)", len(t.Events), maxTotalActions)
	}
	for a, byStatus := range t.Events {
		if len(byStatus) > maxTotalStatuses {
			return fmt.Errorf("totals.events[%q] has %d statuses; bgd records far fewer (at most %d)", a, len(byStatus), maxTotalStatuses)
		}
	}
	if d := t.LastDeploy; d != nil && d.Duration < 0 {
		return fmt.Errorf("totals.last_deploy.duration_ns is %d: a duration is at least 0", d.Duration)
	}
	return nil
}
