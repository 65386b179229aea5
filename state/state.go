// Package state is bgd's record of a service: which colour is active, each
// slot's pid, port, health and release, and the deployment history. It is a
// JSON file (the seed's bg_state.json fields, never renamed), written
// atomically and changed only under an exclusive lock.
package state

import (
	"time"

	"github.com/bgd-dev/bgd/config"
)

// MaxHistory bounds deployment_history; the oldest entries are dropped.
const MaxHistory = 50

// History statuses.
const (
	StatusSuccess    = "success"
	StatusFailed     = "failed"
	StatusRolledBack = "rolled_back"
	// StatusAutoRolledBack: bgd rolled the release back by itself after
	// its analysis crossed a threshold (the reason has the numbers).
	StatusAutoRolledBack = "auto_rolled_back"
)

// State is the content of one service's state file.
type State struct {
	ActiveVersion config.Color `json:"active_version"`
	BluePort      int          `json:"blue_port"`
	GreenPort     int          `json:"green_port"`
	BluePID       int          `json:"blue_pid"`
	GreenPID      int          `json:"green_pid"`
	BlueHealthy   bool         `json:"blue_healthy"`
	GreenHealthy  bool         `json:"green_healthy"`
	LastSwitch    *time.Time   `json:"last_switch"`
	LastCheck     *time.Time   `json:"last_check"`
	History       []Event      `json:"deployment_history"`

	// Added by bgd.
	ProxyPID     int    `json:"proxy_pid,omitempty"`
	BlueRelease  string `json:"blue_release,omitempty"`
	GreenRelease string `json:"green_release,omitempty"`
	// The start time of each recorded process, in clock ticks after boot
	// (/proc/PID/stat's starttime): with the marker in its environment, it
	// is how bgd knows a pid is still the process it started before it
	// signals it. 0: not recorded (a file written by an older tool).
	BluePIDStart  uint64 `json:"blue_pid_starttime,omitempty"`
	GreenPIDStart uint64 `json:"green_pid_starttime,omitempty"`
	ProxyPIDStart uint64 `json:"proxy_pid_starttime,omitempty"`
	// Generation counts flips; the builtin proxy reports the one it serves,
	// which is how a flip is confirmed.
	Generation uint64 `json:"generation"`
	// InProgress is set while an operation runs and cleared when it ends; a
	// value left behind means bgd was killed mid-operation.
	InProgress *Operation `json:"in_progress,omitempty"`
	// The health sweep's restarts of each slot (nil: none since an
	// operator last started or stopped it).
	BlueRestarts  *Restarts `json:"blue_restarts,omitempty"`
	GreenRestarts *Restarts `json:"green_restarts,omitempty"`
	// The consecutive failed health-sweep probes of each slot (0: its last
	// recorded result passed). A failed probe adds one to the count when
	// the slot's recorded result (<colour>_healthy) was a failure, and
	// starts it at 1 when it was a pass; a passing probe, and the sweep's
	// own restart of the slot, set it to 0. A start or deploy that records
	// the slot healthy thereby starts its count afresh too. With failover,
	// the sweep moves traffic off the active slot once its count reaches
	// the service's failover_after.
	BlueFailedProbes  int `json:"blue_failed_probes,omitempty"`
	GreenFailedProbes int `json:"green_failed_probes,omitempty"`
	// Canary is the weighted split in force (bgd deploy --canary, bgd
	// canary): the standby colour gets Canary.Weight percent of new
	// requests, the active colour the rest. nil: no split, every new
	// request goes to the active colour.
	Canary *Canary `json:"canary,omitempty"`
	// Shadow: the load balancer copies each request to the standby slot
	// and discards its answer (bgd shadow on).
	Shadow bool `json:"shadow,omitempty"`
	// Maintenance: the load balancer answers every request 503 instead of
	// routing it (bgd maintenance on).
	Maintenance bool `json:"maintenance,omitempty"`
	// MaintenancePage is the HTML file answered during maintenance (its
	// absolute path); "": the load balancer's own short text.
	MaintenancePage string `json:"maintenance_page,omitempty"`
	// Paused: the load balancer holds new requests (bgd pause) until bgd
	// resume, or until Paused.Until, after which it releases them.
	Paused *Pause `json:"paused,omitempty"`
	// Watch is a new slot under analysis that health sweeps judge too: the
	// slot a deploy flipped to, until Until, or a canary (Until zero) for
	// as long as it lasts. nil: none.
	Watch *Watch `json:"watch,omitempty"`
	// Totals count what the history cannot keep (it is bounded): every
	// entry ever recorded, the flips, the last deploy. nil: none recorded
	// yet (made from the history at the first Record).
	Totals *Totals `json:"totals,omitempty"`
}

// Watch is a slot under analysis, with the load balancer's counts of it
// when the watch began: what a health sweep measures it from.
type Watch struct {
	Color   config.Color `json:"color"`
	Release string       `json:"release,omitempty"`
	Since   time.Time    `json:"since"`
	// Until ends a deploy's watch; zero for a canary's.
	Until    time.Time `json:"until,omitzero"`
	Requests uint64    `json:"requests"`
	Errors   uint64    `json:"errors"`
}

// Pause is a hold on new requests (bgd pause).
type Pause struct {
	Since time.Time `json:"since"`
	// Until is when the load balancer releases held requests by itself
	// (pause_timeout after Since).
	Until time.Time `json:"until"`
}

// Canary is a weighted split between the active colour and the standby,
// which is the canary.
type Canary struct {
	// Color is the canary: always the colour that is not ActiveVersion.
	Color config.Color `json:"color"`
	// Weight is the canary's percentage of new requests, 1-99.
	Weight int `json:"weight"`
	// Sticky: each client stays on the side that first answered it (a
	// cookie the load balancer sets; lb.Route.Sticky).
	Sticky bool `json:"sticky,omitempty"`
	// Started is when the split began (the first weight).
	Started time.Time `json:"started"`
}

// Restarts counts a slot's restarts by health sweeps within a window
// (health.restart_window) that began at Since, for health.max_restarts.
type Restarts struct {
	Count int       `json:"count"`
	Since time.Time `json:"since"`
}

// Event is one entry of deployment_history.
type Event struct {
	Timestamp time.Time    `json:"timestamp"`
	From      config.Color `json:"from"`
	To        config.Color `json:"to"`
	Status    string       `json:"status"`
	// Added by bgd: what was done and why it ended as it did.
	Action  string `json:"action,omitempty"`
	Release string `json:"release,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Weight is the canary's percentage of new requests after a canary
	// step (action canary) or a promote (100); 0 for other actions.
	Weight int `json:"weight,omitempty"`
}

// Operation describes a running mutating command.
type Operation struct {
	Command string       `json:"command"`
	PID     int          `json:"pid"`
	Started time.Time    `json:"started"`
	From    config.Color `json:"from,omitempty"`
	To      config.Color `json:"to,omitempty"`
}

// New is the state of a service nothing has run for yet: blue active, both stopped.
func New(bluePort, greenPort int) *State {
	return &State{ActiveVersion: config.Blue, BluePort: bluePort, GreenPort: greenPort, History: []Event{}}
}

// SlotState is one colour's part of the state. The file keeps it flat, as
// the original tool did: <colour>_pid, <colour>_pid_starttime,
// <colour>_port, <colour>_healthy and <colour>_release (State's Blue* and
// Green* fields, which Slot and SetSlot read and write).
type SlotState struct {
	PID int
	// StartTime is the start time of PID in clock ticks after boot
	// (/proc/PID/stat's starttime); 0: not recorded.
	StartTime uint64
	Port      int
	Healthy   bool
	Release   string
}

// Slot returns the fields of the given colour (Green's for config.Green,
// Blue's otherwise).
func (s *State) Slot(color config.Color) SlotState {
	if color == config.Green {
		return SlotState{PID: s.GreenPID, StartTime: s.GreenPIDStart, Port: s.GreenPort, Healthy: s.GreenHealthy, Release: s.GreenRelease}
	}
	return SlotState{PID: s.BluePID, StartTime: s.BluePIDStart, Port: s.BluePort, Healthy: s.BlueHealthy, Release: s.BlueRelease}
}

// SetSlot writes the fields of the given colour (Green's for config.Green,
// Blue's otherwise).
func (s *State) SetSlot(color config.Color, sl SlotState) {
	if color == config.Green {
		s.GreenPID, s.GreenPIDStart, s.GreenPort, s.GreenHealthy, s.GreenRelease = sl.PID, sl.StartTime, sl.Port, sl.Healthy, sl.Release
		return
	}
	s.BluePID, s.BluePIDStart, s.BluePort, s.BlueHealthy, s.BlueRelease = sl.PID, sl.StartTime, sl.Port, sl.Healthy, sl.Release
}

// Restarts returns color's restart record (nil: none).
func (s *State) Restarts(color config.Color) *Restarts {
	if color == config.Green {
		return s.GreenRestarts
	}
	return s.BlueRestarts
}

// SetRestarts replaces color's restart record (nil clears it).
func (s *State) SetRestarts(color config.Color, r *Restarts) {
	if color == config.Green {
		s.GreenRestarts = r
		return
	}
	s.BlueRestarts = r
}

// FailedProbes returns color's count of consecutive failed probes.
func (s *State) FailedProbes(color config.Color) int {
	if color == config.Green {
		return s.GreenFailedProbes
	}
	return s.BlueFailedProbes
}

// SetFailedProbes replaces color's count of consecutive failed probes.
func (s *State) SetFailedProbes(color config.Color, n int) {
	if color == config.Green {
		s.GreenFailedProbes = n
		return
	}
	s.BlueFailedProbes = n
}

// UpdateSlot changes the fields of the given colour with f.
func (s *State) UpdateSlot(color config.Color, f func(*SlotState)) {
	sl := s.Slot(color)
	f(&sl)
	s.SetSlot(color, sl)
}

// Record appends an event, keeping at most MaxHistory, and counts it in
// Totals.
func (s *State) Record(e Event) {
	if e.Timestamp.IsZero() {
		e.Timestamp = Now()
	}
	s.countEvent(e)
	s.History = append(s.History, e)
	if len(s.History) > MaxHistory {
		s.History = append([]Event(nil), s.History[len(s.History)-MaxHistory:]...)
	}
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := *s
	c.History = append([]Event(nil), s.History...)
	if s.InProgress != nil {
		op := *s.InProgress
		c.InProgress = &op
	}
	for _, col := range config.Colors {
		if r := s.Restarts(col); r != nil {
			cp := *r
			c.SetRestarts(col, &cp)
		}
	}
	c.Canary, c.Paused, c.Watch = clonePtr(s.Canary), clonePtr(s.Paused), clonePtr(s.Watch)
	c.Totals = s.Totals.clone()
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// Now is the current time in UTC, as stored in the file.
func Now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// TimePtr returns a pointer to t.
func TimePtr(t time.Time) *time.Time { return &t }
