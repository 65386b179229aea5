package state

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecode: no input makes the decoder panic; what it accepts is a valid
// state that survives a save/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	valid, _ := json.Marshal(sample())
	for _, seed := range []string{
		string(valid),
		string(valid[:len(valid)/2]),
		"",
		"{}",
		"null",
		"[]",
		`{"active_version":"blue"}`,
		`{"active_version":"green","blue_port":65535,"green_port":0,"generation":18446744073709551615}`,
		`{"active_version":"blue","deployment_history":[{"timestamp":"2026-01-02T03:04:05Z","from":"blue","to":"green","status":"success"}]}`,
		`{"active_version":"blue","in_progress":{"command":"deploy","pid":1,"started":"2026-01-02T03:04:05Z"}}`,
		`{"active_version":"blue","last_switch":"2026-13-45T99:00:00Z"}`,
		`{"active_version":"blue"}]`,
		`{"active_version":"blue","blue_pid":-1}`,
		"\x00\xff\xfe",
		`{"active_version":"blue","blue_port":1e400}`,
		`{"active_version":"\ud800"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Decode(data)
		if err != nil {
			if st != nil {
				t.Fatal("Decode returned a state with an error")
			}
			return
		}
		if st.ActiveVersion != "blue" && st.ActiveVersion != "green" {
			t.Fatalf("accepted active_version %q", st.ActiveVersion)
		}
		out, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			t.Fatalf("accepted state does not encode: %v", err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("a saved accepted state does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normal(st), normal(again)) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", st, again)
		}
	})
}

// normal drops what JSON cannot round-trip exactly (monotonic clock
// readings, time zone pointers) by encoding once more.
func normal(st *State) string {
	b, _ := json.Marshal(st)
	return string(b)
}
