package state

import (
	"bytes"
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
		`{"active_version":"blue","active_version":"green"}`,
		`{"active_version":"blue","Active_Version":"green"}`,
		`{"active_version":"blue","deployment_history":[{"status":"success","Status":"failed"}]}`,
		`{"active_version":"blue","last_switch":"2025-10-16T18:30:00.123456","last_check":"2025-10-16 18:30:00"}`,
		`{"active_version":"blue","deployment_history":[{"timestamp":"2025-10-16T18:30:00.5","status":"success"}],"in_progress":{"started":"2025-10-16T18:30:00+02:00"}}`,
		`{"active_version":"blue","last_switch" : "2025-10-16T18\u003a30:00" }`,
		`{"active_version":"blue","green_pid":4194305}`,
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
		// No key of the top-level object is repeated or matches a field
		// only case-insensitively.
		fields := fieldsOf(reflect.TypeFor[State]())
		seen := map[string]bool{}
		for _, k := range topKeys(data) {
			if _, ok := fields.types[k]; !ok || seen[k] {
				t.Fatalf("accepted key %q (known %v, seen before %v)", k, ok, seen[k])
			}
			seen[k] = true
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

// topKeys lists the keys of a JSON object, in order, repeats included.
func topKeys(data []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := tok.(string)
		keys = append(keys, k)
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return keys
		}
	}
	return keys
}

// normal drops what JSON cannot round-trip exactly (monotonic clock
// readings, time zone pointers) by encoding once more.
func normal(st *State) string {
	b, _ := json.Marshal(st)
	return string(b)
}
