package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDecodeRefusesAmbiguousKeys: encoding/json takes the last of two equal
// keys and matches field names case-insensitively, so these files used to
// load as something their author may not have meant. They are corrupt.
func TestDecodeRefusesAmbiguousKeys(t *testing.T) {
	cases := []struct {
		name, data, want string
	}{
		{"duplicate key", `{"active_version":"blue","active_version":"green"}`, `key "active_version" appears twice`},
		{"duplicate after escapes", `{"active_version":"blue","active\u005fversion":"green"}`, `key "active_version" appears twice`},
		{"keys differing in case", `{"active_version":"blue","Active_Version":"green"}`, `key "Active_Version" is not "active_version"`},
		{"case-insensitive match alone", `{"Active_Version":"green"}`, `key "Active_Version" is not "active_version"`},
		{"Unicode folding (long s)", `{"active_verſion":"green"}`, `key "active_verſion" is not "active_version"`},
		{"Unicode folding (Kelvin sign)", `{"active_version":"blue","last_chec\u212A":null}`, `is not "last_check"`},
		{"duplicate pid", `{"active_version":"blue","blue_pid":0,"blue_pid":4242}`, `key "blue_pid" appears twice`},
		{"duplicate in a history entry", `{"active_version":"blue","deployment_history":[{"status":"success"},{"status":"success","status":"failed"}]}`,
			`key "deployment_history[1].status" appears twice`},
		{"case in a history entry", `{"active_version":"blue","deployment_history":[{"Status":"success"}]}`,
			`key "deployment_history[0].Status" is not "deployment_history[0].status"`},
		{"duplicate in in_progress", `{"active_version":"blue","in_progress":{"command":"deploy","pid":1,"pid":2}}`,
			`key "in_progress.pid" appears twice`},
		{"case in in_progress", `{"active_version":"blue","in_progress":{"command":"deploy","PID":2}}`,
			`key "in_progress.PID" is not "in_progress.pid"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Decode([]byte(tc.data))
			if err == nil || st != nil {
				t.Fatalf("Decode = %+v, %v; want an error containing %q", st, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode error %q does not contain %q", err, tc.want)
			}
		})
	}

	// Through Load it is ErrCorrupt, and the file is left as it was.
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	bad := []byte(`{"active_version":"blue","Active_Version":"green"}`)
	if err := os.WriteFile(s.Path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "case-sensitive") {
		t.Errorf("Load = %v, want ErrCorrupt", err)
	}
	if got, _ := os.ReadFile(s.Path); !bytes.Equal(got, bad) {
		t.Error("the file was changed")
	}
}

// TestDecodeSameKeyInSeparateObjects: each history entry has its own keys.
func TestDecodeSameKeyInSeparateObjects(t *testing.T) {
	data := `{"active_version":"blue","deployment_history":[{"from":"blue","status":"success"},{"from":"green","status":"failed"}],
		"in_progress":{"command":"deploy","from":"blue","to":"green","pid":1,"started":"2026-01-02T03:04:05Z"}}`
	st, err := Decode([]byte(data))
	if err != nil || len(st.History) != 2 || st.InProgress.From != "blue" {
		t.Fatalf("Decode = %+v, %v", st, err)
	}
}

func mustUTC(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPythonSeedFile: a state file the original Python tool wrote, with
// isoformat() timestamps without a zone, loads (as UTC), saves as RFC 3339
// UTC, and reloads to the same state.
func TestPythonSeedFile(t *testing.T) {
	seed, err := os.ReadFile(filepath.Join("testdata", "python_seed.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	if err := os.WriteFile(s.Path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load()
	if err != nil {
		t.Fatalf("Load of the Python tool's file: %v", err)
	}
	want := &State{
		ActiveVersion: "green", BluePort: 5005, GreenPort: 5006, BluePID: 12345, GreenPID: 12399,
		BlueHealthy: true, GreenHealthy: true,
		LastSwitch: TimePtr(mustUTC(t, "2025-10-16T18:30:00.123456Z")),
		LastCheck:  TimePtr(mustUTC(t, "2025-10-16T18:31:07Z")),
		History: []Event{
			{Timestamp: mustUTC(t, "2025-10-15T09:00:00.000001Z"), From: "green", To: "blue", Status: StatusRolledBack},
			{Timestamp: mustUTC(t, "2025-10-16T18:29:58.5Z"), From: "blue", To: "green", Status: StatusSuccess},
			{Timestamp: mustUTC(t, "2025-10-16T18:30:00.123456Z"), From: "blue", To: "green", Status: StatusSuccess},
		},
	}
	if normal(st) != normal(want) {
		t.Errorf("loaded\n %s\nwant\n %s", normal(st), normal(want))
	}
	for _, tm := range []time.Time{*st.LastSwitch, *st.LastCheck, st.History[0].Timestamp} {
		if tm.Location() != time.UTC {
			t.Errorf("%v is not in UTC", tm)
		}
	}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	saved, _ := os.ReadFile(s.Path)
	for _, w := range []string{`"last_switch": "2025-10-16T18:30:00.123456Z"`, `"last_check": "2025-10-16T18:31:07Z"`,
		`"timestamp": "2025-10-15T09:00:00.000001Z"`, `"timestamp": "2025-10-16T18:29:58.5Z"`} {
		if !bytes.Contains(saved, []byte(w)) {
			t.Errorf("saved file lacks %s:\n%s", w, saved)
		}
	}
	// Every timestamp written is RFC 3339 in UTC.
	for _, m := range regexp.MustCompile(`"\d{4}-\d\d-\d\d[T ][^"]*"`).FindAll(saved, -1) {
		if !bytes.HasSuffix(m, []byte(`Z"`)) {
			t.Errorf("saved timestamp %s is not RFC 3339 UTC", m)
		}
	}
	again, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, st) {
		t.Errorf("reload changed the state:\n got %+v\nwant %+v", again, st)
	}
}

// TestDecodePythonTimestamps: each time field takes the Python forms, and
// null; malformed times are still refused.
func TestDecodePythonTimestamps(t *testing.T) {
	ok := []struct {
		name, data string
		get        func(*State) *time.Time
		want       string // RFC 3339 UTC, or "" for nil
	}{
		{"last_switch microseconds", `{"active_version":"blue","last_switch":"2025-10-16T18:30:00.123456"}`,
			func(s *State) *time.Time { return s.LastSwitch }, "2025-10-16T18:30:00.123456Z"},
		{"last_check whole seconds", `{"active_version":"blue","last_check":"2025-10-16T18:30:00"}`,
			func(s *State) *time.Time { return s.LastCheck }, "2025-10-16T18:30:00Z"},
		{"last_switch null", `{"active_version":"blue","last_switch":null,"last_check":null}`,
			func(s *State) *time.Time { return s.LastSwitch }, ""},
		{"str(datetime) with a space", `{"active_version":"blue","last_switch":"2025-10-16 18:30:00.5"}`,
			func(s *State) *time.Time { return s.LastSwitch }, "2025-10-16T18:30:00.5Z"},
		{"offset converted to UTC", `{"active_version":"blue","last_switch":"2025-10-16T20:30:00+02:00"}`,
			func(s *State) *time.Time { return s.LastSwitch }, "2025-10-16T18:30:00Z"},
		{"history tenth of a second", `{"active_version":"blue","deployment_history":[{"timestamp":"2025-10-16T18:30:00.5","from":"blue","to":"green","status":"success"}]}`,
			func(s *State) *time.Time { return &s.History[0].Timestamp }, "2025-10-16T18:30:00.5Z"},
		{"history null", `{"active_version":"blue","deployment_history":[{"timestamp":null,"status":"success"}]}`,
			func(s *State) *time.Time { return &s.History[0].Timestamp }, "0001-01-01T00:00:00Z"},
		{"in_progress.started", `{"active_version":"blue","in_progress":{"command":"deploy","pid":7,"started":"2025-10-16T18:30:00"}}`,
			func(s *State) *time.Time { return &s.InProgress.Started }, "2025-10-16T18:30:00Z"},
		{"spaces around the value", "{\"active_version\":\"blue\",\"last_switch\" :\n\t \"2025-10-16T18:30:00\" \n,\"blue_port\":1}",
			func(s *State) *time.Time { return s.LastSwitch }, "2025-10-16T18:30:00Z"},
		{"escaped characters", `{"active_version":"blue","last_switch":"2025-10-16T18\u003a30:00"}`,
			func(s *State) *time.Time { return s.LastSwitch }, "2025-10-16T18:30:00Z"},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Decode([]byte(tc.data))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got := tc.get(st)
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("got %v, want nil", got)
			case tc.want != "" && (got == nil || got.Format(time.RFC3339Nano) != tc.want || got.Location() != time.UTC):
				t.Errorf("got %v, want %s in UTC", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"yesterday", "2025-10-16", "2025-10-16T18:30", "2025-10-16T18:30:00,5", "2025-10-16T25:30:00",
		"2025-10-16t18:30:00", "2025-10-16T18:30:00.", " 2025-10-16T18:30:00"} {
		data := `{"active_version":"blue","last_switch":"` + bad + `"}`
		if st, err := Decode([]byte(data)); err == nil {
			t.Errorf("Decode accepted last_switch %q as %v", bad, st.LastSwitch)
		}
	}
}

// TestDecodeHostileValues: values a hostile file could use against a
// root-run bgd are refused as corrupt.
func TestDecodeHostileValues(t *testing.T) {
	cases := []struct{ name, data, want string }{
		{"pid above the kernel's limit", `{"active_version":"blue","blue_pid":4194305}`, "blue_pid is 4194305, above the largest pid"},
		{"huge pid", `{"active_version":"blue","green_pid":9223372036854775807}`, "green_pid is 9223372036854775807"},
		{"huge proxy pid", `{"active_version":"blue","proxy_pid":5000000}`, "proxy_pid is 5000000"},
		{"in_progress pid above the limit", `{"active_version":"blue","in_progress":{"command":"deploy","pid":4194305}}`, "in_progress.pid is 4194305"},
		{"negative in_progress pid", `{"active_version":"blue","in_progress":{"command":"deploy","pid":-1}}`, "negative pid: in_progress.pid is -1"},
		{"release escaping the releases folder", `{"active_version":"blue","blue_release":"../../../etc"}`, `blue_release: release name "../../../etc"`},
		{"release that is ..", `{"active_version":"blue","green_release":".."}`, "green_release: release name"},
		{"release with an escape sequence", `{"active_version":"blue","green_release":"r1\u001b[2J"}`, "green_release: release name"},
		{"history release", `{"active_version":"blue","deployment_history":[{"status":"success","release":"a/b"}]}`, "deployment_history[0].release"},
		{"canary of the active colour", `{"active_version":"blue","canary":{"color":"blue","weight":10}}`, "canary.color is blue, which is active_version"},
		{"canary of no colour", `{"active_version":"blue","canary":{"color":"red","weight":10}}`, `canary.color is "red"`},
		{"negative failed probes", `{"active_version":"blue","green_failed_probes":-3}`, "green_failed_probes is -3: a count of failed probes is at least 0"},
		{"canary weight 0", `{"active_version":"blue","canary":{"color":"green","weight":0}}`, "canary.weight is 0"},
		{"watch of no colour", `{"active_version":"blue","watch":{"color":"","since":"2026-01-01T00:00:00Z","requests":1,"errors":0}}`, `watch.color is ""`},
		{"canary weight 100", `{"active_version":"blue","canary":{"color":"green","weight":100}}`, "canary.weight is 100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Decode([]byte(tc.data))
			if err == nil || st != nil {
				t.Fatalf("Decode = %+v, %v; want an error containing %q", st, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "invalid configuration") {
				t.Errorf("Decode error %q does not contain %q (or blames the configuration)", err, tc.want)
			}
		})
	}
	// The largest pid the kernel can give and valid releases still pass.
	st, err := Decode([]byte(`{"active_version":"blue","blue_pid":4194304,"blue_release":"20251016-183000","in_progress":{"command":"deploy","pid":4194304}}`))
	if err != nil || st.BluePID != 4194304 {
		t.Errorf("Decode of pid 4194304 = %+v, %v; want it accepted", st, err)
	}
}

// TestDecodeLongHistory: a file with a history far longer than bgd keeps
// (an older tool, a hand edit) loads quickly as the newest MaxHistory.
func TestDecodeLongHistory(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"active_version":"blue","deployment_history":[`)
	const n = 40000 // about 3 MiB, under the read cap
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"timestamp":"2025-10-16T18:30:00","from":"blue","to":"green","status":"success","reason":"%d"}`, i)
	}
	b.WriteString(`]}`)
	if b.Len() > maxStateSize {
		t.Fatalf("test file is %d bytes, over the read cap", b.Len())
	}
	start := time.Now()
	st, err := Decode([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Decode of %d entries took %s", n, d)
	}
	if len(st.History) != MaxHistory || st.History[0].Reason != strconv.Itoa(n-MaxHistory) || st.History[MaxHistory-1].Reason != strconv.Itoa(n-1) {
		t.Errorf("history has %d entries from %q to %q, want the newest %d", len(st.History), st.History[0].Reason, st.History[len(st.History)-1].Reason, MaxHistory)
	}
}

// TestEveryFieldChecked: the key walk reads its schema from the json tags,
// so every field, including ones added later, is covered: each repeated,
// and each in upper case, is refused.
func TestEveryFieldChecked(t *testing.T) {
	for _, typ := range []struct {
		t    reflect.Type
		wrap func(obj string) string
	}{
		{reflect.TypeFor[State](), func(obj string) string { return obj }},
		{reflect.TypeFor[Event](), func(obj string) string { return `{"active_version":"blue","deployment_history":[` + obj + `]}` }},
		{reflect.TypeFor[Operation](), func(obj string) string { return `{"active_version":"blue","in_progress":` + obj + `}` }},
	} {
		for i := range typ.t.NumField() {
			k, _, _ := strings.Cut(typ.t.Field(i).Tag.Get("json"), ",")
			if k == "" || k == "-" {
				continue
			}
			if _, err := Decode([]byte(typ.wrap(`{"` + k + `":null,"` + k + `":null}`))); err == nil || !strings.Contains(err.Error(), "appears twice") {
				t.Errorf("%s.%s repeated: Decode error %v, want a duplicate key", typ.t.Name(), k, err)
			}
			if _, err := Decode([]byte(typ.wrap(`{"` + strings.ToUpper(k) + `":null}`))); err == nil || !strings.Contains(err.Error(), "case-sensitive") {
				t.Errorf("%s.%s in upper case: Decode error %v, want a case mismatch", typ.t.Name(), k, err)
			}
		}
	}
}

type embeddedInner struct {
	StartedAt time.Time `json:"started_at"`
}

type embeddedOuter struct {
	embeddedInner
	Color string `json:"color"`
}

// TestSchemaEmbedded: fields of an embedded struct are promoted, as
// encoding/json promotes them.
func TestSchemaEmbedded(t *testing.T) {
	sc := fieldsOf(reflect.TypeFor[embeddedOuter]())
	if _, ok := sc.types["started_at"]; !ok || len(sc.types) != 2 {
		t.Errorf("schema of a struct with an embedded struct: %v, want color and started_at", sc.types)
	}
}
