package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
)

// TestTotalsOutliveTheHistory: the totals count every entry ever recorded,
// although the history keeps MaxHistory of them, and survive a save and a
// load.
func TestTotalsOutliveTheHistory(t *testing.T) {
	st := New(5005, 5006)
	for range MaxHistory + 30 {
		st.Record(Event{Action: "deploy", Status: StatusSuccess})
	}
	st.Record(Event{Action: "deploy --release v9", Status: StatusFailed, Reason: "interrupted: ..."})
	st.Record(Event{Action: "rollback", Status: StatusAutoRolledBack})
	st.Record(Event{Action: "abort", Status: StatusAutoRolledBack})
	st.Record(Event{Action: "rollback", Status: StatusRolledBack})
	st.CountFlip()
	st.CountFlip()
	s := &Store{Path: filepath.Join(t.TempDir(), "s.json")}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.History) != MaxHistory {
		t.Fatalf("history has %d entries, want %d", len(got.History), MaxHistory)
	}
	tt := got.Totals
	for _, c := range []struct {
		action, status string
		want           uint64
	}{
		{"deploy", StatusSuccess, MaxHistory + 30},
		{"deploy", StatusFailed, 1},
		{"rollback", StatusAutoRolledBack, 1},
		{"rollback", StatusRolledBack, 1},
		{"abort", StatusAutoRolledBack, 1},
		{"switch", StatusSuccess, 0},
	} {
		if n := tt.Count(c.action, c.status); n != c.want {
			t.Errorf("Count(%s, %s) = %d, want %d", c.action, c.status, n, c.want)
		}
	}
	if n := tt.CountStatus(StatusAutoRolledBack); n != 2 {
		t.Errorf("CountStatus(auto_rolled_back) = %d, want 2", n)
	}
	if tt.Flips != 2 {
		t.Errorf("Flips = %d, want 2", tt.Flips)
	}
	if d := tt.LastDeploy; d == nil || d.Status != StatusFailed || d.Duration != 0 {
		t.Errorf("LastDeploy = %+v, want the interrupted deploy, failed, with no duration", d)
	}
}

// TestTotalsStartFromAnOlderHistory: a file written before the totals
// existed has its history counted once, at the first Record.
func TestTotalsStartFromAnOlderHistory(t *testing.T) {
	st := New(5005, 5006)
	st.History = []Event{{Action: "deploy", Status: StatusSuccess}, {Action: "deploy", Status: StatusFailed}}
	if tt := st.CurrentTotals(); tt.Count("deploy", StatusFailed) != 1 || tt.LastDeploy == nil || tt.LastDeploy.Status != StatusFailed || st.Totals != nil {
		t.Fatalf("CurrentTotals = %+v (state's %v): want the history's counts, its last deploy, the state unchanged", tt, st.Totals)
	}
	st.Record(Event{Action: "deploy", Status: StatusSuccess})
	if n := st.Totals.Count("deploy", StatusSuccess); n != 2 {
		t.Errorf("deploy success = %d, want 2 (one in the old history, one recorded)", n)
	}
	if n := st.Totals.Count("deploy", StatusFailed); n != 1 {
		t.Errorf("deploy failed = %d, want 1", n)
	}
}

// TestLastDeployDuration: a deploy's entry recorded while this process
// runs it has its duration from the in-progress mark.
func TestLastDeployDuration(t *testing.T) {
	st := New(5005, 5006)
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st.InProgress = &Operation{Command: "deploy", PID: os.Getpid(), Started: start}
	st.Record(Event{Action: "deploy", From: config.Blue, To: config.Green, Status: StatusSuccess, Timestamp: start.Add(1500 * time.Millisecond)})
	d := st.Totals.LastDeploy
	if d == nil || d.Duration != 1500*time.Millisecond || d.Status != StatusSuccess || !d.Ended.Equal(start.Add(1500*time.Millisecond)) {
		t.Fatalf("LastDeploy = %+v, want success after 1.5s", d)
	}
	// Another process's deploy, found interrupted: no duration.
	st.InProgress = &Operation{Command: "deploy", PID: os.Getpid() + 1, Started: start}
	st.Record(Event{Action: "deploy", Status: StatusFailed, Timestamp: start.Add(time.Hour)})
	if d := st.Totals.LastDeploy; d.Duration != 0 || d.Status != StatusFailed {
		t.Fatalf("LastDeploy = %+v, want failed with no duration", d)
	}
	// A deploy rolled back by its analysis ends as that rollback.
	st.InProgress = &Operation{Command: "deploy --release bad --watch 20s", PID: os.Getpid(), Started: start}
	st.Record(Event{Action: "deploy", Status: StatusSuccess, Timestamp: start.Add(time.Second)})
	st.Record(Event{Action: "rollback", Status: StatusAutoRolledBack, Timestamp: start.Add(3 * time.Second)})
	if d := st.Totals.LastDeploy; d.Duration != 3*time.Second || d.Status != StatusAutoRolledBack {
		t.Fatalf("LastDeploy = %+v, want auto_rolled_back after 3s", d)
	}
	// Another command's entries leave the last deploy alone.
	st.InProgress = &Operation{Command: "switch blue", PID: os.Getpid(), Started: start}
	st.Record(Event{Action: "switch", Status: StatusSuccess, Timestamp: start.Add(time.Hour)})
	if d := st.Totals.LastDeploy; d.Status != StatusAutoRolledBack {
		t.Fatalf("after a switch: LastDeploy = %+v, want the deploy's", d)
	}
	st.InProgress = &Operation{Command: "deploy", PID: os.Getpid() + 1, Started: start}
	st.Record(Event{Action: "deploy", Status: StatusFailed, Timestamp: start.Add(time.Hour)})
	c := st.Clone()
	c.Totals.Events["deploy"][StatusFailed] = 99
	c.Totals.LastDeploy.Status = "x"
	if st.Totals.Count("deploy", StatusFailed) != 2 || st.Totals.LastDeploy.Status != StatusFailed {
		t.Fatal("changing a clone's totals changed the original")
	}
}

// TestDecodeRefusesHugeTotals: a hand-made file cannot grow the totals
// without bound.
func TestDecodeRefusesHugeTotals(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"active_version":"blue","blue_port":5005,"green_port":5006,"blue_pid":0,"green_pid":0,"blue_healthy":false,"green_healthy":false,"last_switch":null,"last_check":null,"deployment_history":[],"generation":0,"totals":{"flips":0,"events":{`)
	for i := range maxTotalActions + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"a` + strings.Repeat("x", i) + `":{"success":1}`)
	}
	b.WriteString("}}}")
	if _, err := Decode([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "totals.events") {
		t.Fatalf("Decode = %v, want an error naming totals.events", err)
	}
}
