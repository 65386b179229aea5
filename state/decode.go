package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/bgd-dev/bgd/config"
)

// keyError is a problem the key walk found: a duplicate key, or a key that
// matches a field only case-insensitively. encoding/json would silently
// take the last duplicate, and match "Active_Version" to active_version.
type keyError struct{ msg string }

func (e *keyError) Error() string { return e.msg }

// errStopWalk ends the walk at a value of the wrong JSON type; the strict
// decode that follows reports it.
var errStopWalk = errors.New("stop")

// edit replaces data[start:end] with repl.
type edit struct {
	start, end int64
	repl       []byte
}

// walker checks the keys of every object the State type describes (the
// top level, each deployment_history entry, in_progress, and whatever
// struct fields are added later: the schema is read from the json tags),
// and notes the timestamps to rewrite. One pass over the tokens: linear.
type walker struct {
	dec   *json.Decoder
	data  []byte
	edits []edit
}

// normalize checks the keys of data and rewrites timestamps the original
// Python tool wrote (datetime.isoformat() without a zone, read as UTC) to
// RFC 3339 UTC. A syntax error is not reported here: the strict decode that
// follows gives its usual message.
func normalize(data []byte) ([]byte, error) {
	w := &walker{dec: json.NewDecoder(bytes.NewReader(data)), data: data}
	err := w.value(reflect.TypeFor[State](), "")
	var ke *keyError
	if errors.As(err, &ke) {
		return nil, err
	}
	if len(w.edits) == 0 {
		return data, nil
	}
	out := make([]byte, 0, len(data)+16*len(w.edits))
	var at int64
	for _, e := range w.edits {
		out = append(out, data[at:e.start]...)
		out = append(out, e.repl...)
		at = e.end
	}
	return append(out, data[at:]...), nil
}

var (
	timeType        = reflect.TypeFor[time.Time]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// value walks the next JSON value, expected to decode into t.
func (w *walker) value(t reflect.Type, where string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return w.timestamp(where)
	case reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType):
		return w.skip()
	case t.Kind() == reflect.Struct:
		return w.object(t, where)
	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8:
		return w.array(t.Elem(), where)
	}
	return w.skip()
}

func (w *walker) skip() error {
	var raw json.RawMessage
	return w.dec.Decode(&raw)
}

// open reads the opening delimiter of an object or array; false for null.
func (w *walker) open(want json.Delim) (bool, error) {
	tok, err := w.dec.Token()
	if err != nil {
		return false, err
	}
	if tok == nil {
		return false, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return false, errStopWalk
	}
	return true, nil
}

func (w *walker) array(elem reflect.Type, where string) error {
	if ok, err := w.open('['); !ok {
		return err
	}
	for i := 0; w.dec.More(); i++ {
		if err := w.value(elem, fmt.Sprintf("%s[%d]", where, i)); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // ]
	return err
}

func (w *walker) object(t reflect.Type, where string) error {
	if ok, err := w.open('{'); !ok {
		return err
	}
	fields := fieldsOf(t)
	seen := make(map[string]bool, len(fields.types))
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		name := key
		if where != "" {
			name = where + "." + key
		}
		ft, known := fields.types[key]
		if !known {
			if field, ok := fields.folded[fold(key)]; ok {
				return &keyError{fmt.Sprintf("key %q is not %q: field names are case-sensitive", name, strings.TrimPrefix(where+"."+field, "."))}
			}
			// An unknown field: the strict decode names it.
			if err := w.skip(); err != nil {
				return err
			}
			continue
		}
		if seen[key] {
			return &keyError{fmt.Sprintf("key %q appears twice", name)}
		}
		seen[key] = true
		if err := w.value(ft, name); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // }
	return err
}

// fold is the case folding encoding/json applies when it matches a key to
// a field name (ToUpper(ToLower(r)), so "ſ" matches "s" and "K" (Kelvin)
// matches "k").
func fold(s string) string {
	return strings.Map(func(r rune) rune { return unicode.ToUpper(unicode.ToLower(r)) }, s)
}

// schema is what the walk needs of a struct type.
type schema struct {
	types  map[string]reflect.Type // JSON name -> field type
	folded map[string]string       // fold(JSON name) -> JSON name
}

var fieldCache sync.Map // reflect.Type -> schema

// fieldsOf gives the JSON names of a struct's fields and their types.
func fieldsOf(t reflect.Type) schema {
	if m, ok := fieldCache.Load(t); ok {
		return m.(schema)
	}
	sc := schema{types: map[string]reflect.Type{}, folded: map[string]string{}}
	addFields(sc, t)
	fieldCache.Store(t, sc)
	return sc
}

// addFields adds t's fields to sc, those of untagged embedded structs too
// (encoding/json promotes them).
func addFields(sc schema, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			addFields(sc, ft)
			continue
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		sc.types[name] = f.Type
		sc.folded[fold(name)] = name
	}
}

// timestamp reads a time value and, when it is not already RFC 3339 in
// UTC, notes its rewrite: a Python isoformat() without a zone
// ("2025-10-16T18:30:00.123456", or with a space for the T) is taken as
// UTC; one with an offset is converted to UTC. Anything else is left for
// the strict decode to refuse.
func (w *walker) timestamp(where string) error {
	var raw json.RawMessage
	if err := w.dec.Decode(&raw); err != nil {
		return err
	}
	end := w.dec.InputOffset()
	start := end - int64(len(raw))
	if start < 0 || !bytes.Equal(w.data[start:end], raw) {
		return nil // cannot locate it: leave it (never rewrite the wrong bytes)
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil // null, or not a string: the strict decode decides
	}
	t, ok := parseTime(s)
	if !ok || strings.HasSuffix(s, "Z") && t.UnmarshalText([]byte(s)) == nil {
		return nil // not a time, or RFC 3339 UTC already
	}
	utc := t.UTC().Format(time.RFC3339Nano)
	if utc == s {
		return nil
	}
	w.edits = append(w.edits, edit{start, end, []byte(`"` + utc + `"`)})
	return nil
}

// parseTime accepts RFC 3339 as time.Time's UnmarshalJSON does, and
// Python's datetime.isoformat() / str(datetime): "YYYY-MM-DD[T ]HH:MM:SS"
// with an optional fraction and an optional offset; without an offset the
// time is UTC.
func parseTime(s string) (time.Time, bool) {
	var t time.Time
	if t.UnmarshalText([]byte(s)) == nil {
		return t, true
	}
	if len(s) > 10 && s[10] == ' ' {
		s = s[:10] + "T" + s[11:]
		if t.UnmarshalText([]byte(s)) == nil {
			return t, true
		}
	}
	t, err := time.Parse("2006-01-02T15:04:05", s)
	if err != nil {
		return time.Time{}, false
	}
	// Go's Parse also takes a comma before the fraction; isoformat never
	// writes one, and a strict reader should not guess.
	if strings.ContainsRune(s, ',') {
		return time.Time{}, false
	}
	return t, true
}

// maxPID is the kernel's PID_MAX_LIMIT: /proc/sys/kernel/pid_max can be
// raised no higher, so a larger pid is no process.
const maxPID = 4194304

// validate refuses values a hostile or broken file could use against a
// root-run bgd, and bounds the history as Record does.
func validate(st *State) error {
	for _, check := range []func(*State) error{validateSlots, validateRouting, validateTotals, validateHistory} {
		if err := check(st); err != nil {
			return err
		}
	}
	return nil
}

// namedInt is a field of the file by its JSON name, for the checks' errors.
type namedInt struct {
	name string
	n    int
}

// validateSlots checks the slots' pids, releases and counts of failed probes.
func validateSlots(st *State) error {
	pids := []namedInt{{"blue_pid", st.BluePID}, {"green_pid", st.GreenPID}, {"proxy_pid", st.ProxyPID}}
	if st.InProgress != nil {
		pids = append(pids, namedInt{"in_progress.pid", st.InProgress.PID})
	}
	for _, p := range pids {
		if p.n < 0 {
			return fmt.Errorf("negative pid: %s is %d", p.name, p.n)
		}
		if p.n > maxPID {
			return fmt.Errorf("%s is %d, above the largest pid the kernel can give (%d)", p.name, p.n, maxPID)
		}
	}
	// Release names select directories (workdir: releases/{{.Release}})
	// when a slot is restarted from the state: the rules of the CLI apply.
	for _, r := range []struct{ name, release string }{{"blue_release", st.BlueRelease}, {"green_release", st.GreenRelease}} {
		if r.release != "" {
			if err := checkRelease(r.release); err != nil {
				return fmt.Errorf("%s: %v", r.name, err)
			}
		}
	}
	for _, f := range []namedInt{{"blue_failed_probes", st.BlueFailedProbes}, {"green_failed_probes", st.GreenFailedProbes}} {
		if f.n < 0 {
			// A negative count would hold a failover back for as many sweeps.
			return fmt.Errorf("%s is %d: a count of failed probes is at least 0", f.name, f.n)
		}
	}
	return nil
}

// validateRouting checks the watch's and the canary's colours and weight.
func validateRouting(st *State) error {
	if w := st.Watch; w != nil && !w.Color.Valid() {
		return fmt.Errorf("watch.color is %q, not blue or green", w.Color)
	}
	if c := st.Canary; c != nil {
		switch {
		case !c.Color.Valid():
			return fmt.Errorf("canary.color is %q, not blue or green", c.Color)
		case c.Color == st.ActiveVersion:
			return fmt.Errorf("canary.color is %s, which is active_version: the canary is the standby", c.Color)
		case c.Weight < 1 || c.Weight > 99:
			return fmt.Errorf("canary.weight is %d, not a percentage in 1-99", c.Weight)
		}
	}
	return nil
}

// validateHistory checks every event and keeps the newest MaxHistory.
func validateHistory(st *State) error {
	for i, e := range st.History {
		if e.Status == "" {
			return fmt.Errorf("deployment_history[%d] has no status", i)
		}
		if e.Release != "" {
			if err := checkRelease(e.Release); err != nil {
				return fmt.Errorf("deployment_history[%d].release: %v", i, err)
			}
		}
	}
	switch {
	case st.History == nil:
		st.History = []Event{}
	case len(st.History) > MaxHistory:
		// An older tool, or a hand-edited file, kept more: keep the newest,
		// as Record would, so a long history costs nothing later.
		st.History = append([]Event(nil), st.History[len(st.History)-MaxHistory:]...)
	}
	return nil
}

// checkRelease is config.CheckRelease without its "invalid configuration"
// prefix: here it is the state file that is wrong.
func checkRelease(name string) error {
	if err := config.CheckRelease(name); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), config.ErrInvalid.Error()+": "))
	}
	return nil
}
