package state

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fullState has every field of the file set (checked by TestGoldenStateFile).
func fullState() *State {
	at := func(sec int) time.Time { return time.Date(2026, 3, 14, 15, 9, sec, 265000000, time.UTC) }
	st := &State{
		ActiveVersion: config.Green,
		LastSwitch:    TimePtr(at(26)),
		LastCheck:     TimePtr(at(53)),
		History: []Event{
			{Timestamp: at(1), From: config.Green, To: config.Blue, Status: StatusRolledBack, Action: "rollback", Release: "v1.0.0", Reason: "first", Weight: 10},
			{Timestamp: at(26), From: config.Blue, To: config.Green, Status: StatusSuccess, Action: "deploy", Release: "v1.1.0", Reason: "second", Weight: 100},
		},
		ProxyPID:          4242,
		ProxyPIDStart:     987654,
		Generation:        7,
		InProgress:        &Operation{Command: "deploy", PID: 4343, Started: at(50), From: config.Green, To: config.Blue},
		BlueRestarts:      &Restarts{Count: 1, Since: at(40)},
		GreenRestarts:     &Restarts{Count: 3, Since: at(45)},
		BlueFailedProbes:  2,
		GreenFailedProbes: 1,
		Canary:            &Canary{Color: config.Blue, Weight: 10, Sticky: true, Started: at(50)},
		Watch:             &Watch{Color: config.Blue, Release: "v1.0.0", Since: at(50), Until: at(59), Requests: 1200, Errors: 3},
		Shadow:            true,
		Maintenance:       true,
		MaintenancePage:   "/srv/www/maintenance.html",
		Paused:            &Pause{Since: at(55), Until: at(56)},
		Totals: &Totals{
			Events:     map[string]map[string]uint64{"deploy": {StatusSuccess: 12, StatusFailed: 2}, "rollback": {StatusRolledBack: 1, StatusAutoRolledBack: 1}},
			Flips:      14,
			LastDeploy: &DeployOutcome{Ended: at(26), Status: StatusSuccess, Duration: 2500 * time.Millisecond},
		},
	}
	st.SetSlot(config.Blue, SlotState{PID: 12345, StartTime: 111111, Port: 5105, Healthy: true, Release: "v1.0.0"})
	st.SetSlot(config.Green, SlotState{PID: 12399, StartTime: 222222, Port: 5106, Healthy: true, Release: "v1.1.0"})
	return st
}

// zeroFields names the fields of v (a struct) left at their zero value,
// those of nested structs, slices' elements and pointers' targets too.
func zeroFields(v reflect.Value, where string) []string {
	var out []string
	for i := range v.NumField() {
		f, name := v.Field(i), where+"."+v.Type().Field(i).Name
		if f.IsZero() {
			out = append(out, name)
			continue
		}
		switch {
		case f.Kind() == reflect.Pointer && f.Elem().Kind() == reflect.Struct && f.Type() != reflect.TypeFor[*time.Time]():
			out = append(out, zeroFields(f.Elem(), name)...)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			for j := range f.Len() {
				out = append(out, zeroFields(f.Index(j), name)...)
			}
		}
	}
	return out
}

// TestGoldenStateFile pins the file format: a state with every field set is
// saved byte for byte as testdata/full_state.json (go test -update
// rewrites it), with the flat keys of the original tool, and decodes back to
// the same value.
func TestGoldenStateFile(t *testing.T) {
	st := fullState()
	if zero := zeroFields(reflect.ValueOf(st).Elem(), "State"); len(zero) > 0 {
		t.Fatalf("fullState leaves fields unset (set them, then go test -update): %v", zero)
	}
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "full_state.json")
	if *updateGolden {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("saved state differs from %s (go test -update rewrites it if the change is meant):\n got: %s\nwant: %s", golden, got, want)
	}
	back, err := Decode(want)
	if err != nil {
		t.Fatalf("decode %s: %v", golden, err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Errorf("decoded %s differs from the state saved:\n got: %+v\nwant: %+v", golden, back, st)
	}
	for _, c := range config.Colors {
		if back.Slot(c) != st.Slot(c) {
			t.Errorf("Slot(%s) after the round trip: %+v, want %+v", c, back.Slot(c), st.Slot(c))
		}
	}
}

// TestSlotAccessors: Slot reads what SetSlot and UpdateSlot write, each
// colour its own fields only.
func TestSlotAccessors(t *testing.T) {
	st := New(5005, 5006)
	if got, want := st.Slot(config.Blue), (SlotState{Port: 5005}); got != want {
		t.Errorf("new blue slot %+v, want %+v", got, want)
	}
	if got, want := st.Slot(config.Green), (SlotState{Port: 5006}); got != want {
		t.Errorf("new green slot %+v, want %+v", got, want)
	}
	green := SlotState{PID: 7, StartTime: 8, Port: 9, Healthy: true, Release: "v2"}
	st.SetSlot(config.Green, green)
	if got := st.Slot(config.Green); got != green {
		t.Errorf("green after SetSlot: %+v, want %+v", got, green)
	}
	if st.GreenPID != 7 || st.GreenPIDStart != 8 || st.GreenPort != 9 || !st.GreenHealthy || st.GreenRelease != "v2" {
		t.Errorf("SetSlot(green) wrote the fields %+v", st)
	}
	if got, want := st.Slot(config.Blue), (SlotState{Port: 5005}); got != want {
		t.Errorf("blue changed by SetSlot(green): %+v", got)
	}
	st.UpdateSlot(config.Blue, func(s *SlotState) { s.PID, s.Healthy = 3, true })
	if got, want := st.Slot(config.Blue), (SlotState{PID: 3, Port: 5005, Healthy: true}); got != want {
		t.Errorf("blue after UpdateSlot: %+v, want %+v", got, want)
	}
	if got := st.Slot(config.Green); got != green {
		t.Errorf("green changed by UpdateSlot(blue): %+v", got)
	}
}
