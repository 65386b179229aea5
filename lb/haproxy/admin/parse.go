package admin

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrMalformed: an answer does not have the shape HAProxy 2.6 gives it.
var ErrMalformed = errors.New("malformed haproxy answer")

func malformed(what, format string, args ...any) error {
	return fmt.Errorf("%w: %s: "+format, append([]any{ErrMalformed, what}, args...)...)
}

// lines splits an answer into its lines, without the blank line HAProxy
// ends every answer with.
func lines(ans string) []string {
	ans = strings.TrimRight(ans, "\n")
	if ans == "" {
		return nil
	}
	return strings.Split(ans, "\n")
}

// ParseBackends parses `show backend`: a "# name" header, then one name a line.
func ParseBackends(ans string) ([]string, error) {
	ls := lines(ans)
	if len(ls) == 0 || strings.TrimSpace(ls[0]) != "# name" {
		return nil, malformed("show backend", "want a %q header, got %.40q", "# name", ans)
	}
	names := make([]string, 0, len(ls)-1)
	for _, l := range ls[1:] {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if strings.ContainsAny(l, " \t") {
			return nil, malformed("show backend", "backend name %q contains a space", l)
		}
		names = append(names, l)
	}
	return names, nil
}

// Stat types (the "type" column of show stat).
const (
	StatFrontend = 0
	StatBackend  = 1
	StatServer   = 2
	StatListener = 3
)

// Stat is one row of `show stat`. The columns bgd uses have fields; every
// column, by its header name, is in Fields.
type Stat struct {
	Proxy       string // pxname
	Name        string // svname: FRONTEND, BACKEND, or the server's name
	Type        int    // StatFrontend, StatBackend, StatServer or StatListener
	Status      string // "UP", "DOWN", "UP 1/2", "MAINT", "DRAIN", "no check", "OPEN"...
	CheckStatus string // "L7OK", "* L4CON"... ("* " while a check runs)
	CheckDesc   string // "Layer7 check passed"...
	Addr        string // "127.0.0.1:5005" for a server
	Fields      map[string]string
}

// IsServer reports whether the row is a server (not a proxy's aggregate).
func (s Stat) IsServer() bool { return s.Type == StatServer }

// Up reports whether HAProxy itself would send traffic to this server and
// its checks agree: status exactly "UP", or "no check" for a server without
// health checks. "UP 1/3" (failing, on its way down) and DRAIN are not up.
func (s Stat) Up() bool { return s.IsServer() && (s.Status == "UP" || s.Status == "no check") }

// ParseStat parses the CSV of `show stat`. The header line names the
// columns ("# pxname,svname,..."); rows may carry an empty trailing column.
func ParseStat(ans string) ([]Stat, error) {
	ls := lines(ans)
	if len(ls) == 0 || !strings.HasPrefix(ls[0], "# ") {
		return nil, malformed("show stat", "want a %q header, got %.40q", "# pxname,...", ans)
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(strings.Join(ls, "\n"), "# ")))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	r.ReuseRecord = false
	header, err := r.Read()
	if err != nil {
		return nil, malformed("show stat", "header: %v", err)
	}
	col := map[string]int{}
	for i, h := range header {
		if h != "" && h != "-" {
			col[h] = i
		}
	}
	for _, need := range []string{"pxname", "svname", "status", "type"} {
		if _, ok := col[need]; !ok {
			return nil, malformed("show stat", "no %q column", need)
		}
	}
	var out []Stat
	for {
		rec, err := r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, malformed("show stat", "%v", err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return rec[i]
			}
			return ""
		}
		typ, err := strconv.Atoi(get("type"))
		if err != nil {
			return nil, malformed("show stat", "row %q: type %q is not a number", strings.Join(rec, ","), get("type"))
		}
		s := Stat{
			Proxy: get("pxname"), Name: get("svname"), Type: typ, Status: get("status"),
			CheckStatus: get("check_status"), CheckDesc: get("check_desc"), Addr: get("addr"),
			Fields: make(map[string]string, min(len(rec), len(col))),
		}
		if s.Proxy == "" || s.Name == "" {
			return nil, malformed("show stat", "row %q has no proxy or server name", strings.Join(rec, ","))
		}
		// Over the row, not the header: a huge header with many short rows
		// must not cost header × rows (found by FuzzParseStat).
		for i, v := range rec {
			if i < len(header) && header[i] != "" && header[i] != "-" {
				s.Fields[header[i]] = v
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// Server operational states (srv_op_state of show servers state).
const (
	SrvStopped  = 0
	SrvStarting = 1
	SrvRunning  = 2
	SrvStopping = 3
)

// Admin state bits (srv_admin_state).
const (
	AdminForcedMaint    = 0x01
	AdminInheritedMaint = 0x02
	AdminConfigMaint    = 0x04
	AdminForcedDrain    = 0x08
	AdminInheritedDrain = 0x10
	AdminResolverMaint  = 0x20
	AdminHostnameMaint  = 0x40
)

// ServerState is one server line of `show servers state` (format version 1).
type ServerState struct {
	BackendID   int
	Backend     string
	ServerID    int
	Server      string
	Addr        string
	OpState     int // SrvStopped...SrvRunning
	AdminState  int // Admin* bits
	CheckHealth int
	Port        int
	Fields      map[string]string // every column by its header name
}

// Ready reports whether the server runs and no maintenance or drain is set.
func (s ServerState) Ready() bool { return s.OpState == SrvRunning && s.AdminState == 0 }

// ParseServersState parses `show servers state`: a version line ("1"), a
// "# be_id be_name ..." header, then one space-separated line per server.
func ParseServersState(ans string) ([]ServerState, error) {
	ls := lines(ans)
	if len(ls) < 2 {
		return nil, malformed("show servers state", "want a version and a header, got %.40q", ans)
	}
	if v := strings.TrimSpace(ls[0]); v != "1" {
		return nil, malformed("show servers state", "format version %.20q, want 1", v)
	}
	if !strings.HasPrefix(ls[1], "# ") {
		return nil, malformed("show servers state", "want a header, got %.40q", ls[1])
	}
	header := strings.Fields(strings.TrimPrefix(ls[1], "# "))
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	for _, need := range []string{"be_id", "be_name", "srv_id", "srv_name", "srv_op_state", "srv_admin_state"} {
		if _, ok := col[need]; !ok {
			return nil, malformed("show servers state", "no %q column", need)
		}
	}
	var out []ServerState
	for _, l := range ls[2:] {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) < len(header) {
			return nil, malformed("show servers state", "line %q has %d fields, want %d", l, len(f), len(header))
		}
		s := ServerState{Fields: make(map[string]string, len(header))}
		for name, i := range col {
			s.Fields[name] = f[i]
		}
		s.Backend, s.Server, s.Addr = f[col["be_name"]], f[col["srv_name"]], s.Fields["srv_addr"]
		var err error
		for _, n := range []struct {
			name string
			dst  *int
		}{{"be_id", &s.BackendID}, {"srv_id", &s.ServerID}, {"srv_op_state", &s.OpState},
			{"srv_admin_state", &s.AdminState}, {"srv_check_health", &s.CheckHealth}, {"srv_port", &s.Port}} {
			v, ok := s.Fields[n.name]
			if !ok {
				continue
			}
			if *n.dst, err = strconv.Atoi(v); err != nil {
				return nil, malformed("show servers state", "line %q: %s %q is not a number", l, n.name, v)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// MapLookup is the answer of `get map`.
type MapLookup struct {
	Found bool
	Key   string // the matched key, when Found
	Value string // its value, when Found
}

// ParseGetMap parses `get map`, e.g.
//
//	type=str, case=sensitive, found=yes, idx=tree, key="app", value="app_blue", type="str"
//
// A map used with several output types answers one line per type; the
// first line is taken. HAProxy does not escape quotes in values: the value
// is what lies between `value="` and the last `", type="`.
func ParseGetMap(ans string) (MapLookup, error) {
	ls := lines(ans)
	if len(ls) == 0 {
		return MapLookup{}, malformed("get map", "empty answer")
	}
	l := ls[0]
	switch {
	case strings.Contains(l, "found=no"):
		return MapLookup{}, nil
	case !strings.Contains(l, "found=yes"):
		return MapLookup{}, malformed("get map", "no found=yes|no in %.80q", l)
	}
	const kOpen, vOpen, vClose = `key="`, `", value="`, `", type="`
	k := strings.Index(l, kOpen)
	v := strings.Index(l, vOpen)
	end := strings.LastIndex(l, vClose)
	if k < 0 || v < k+len(kOpen) || end < v+len(vOpen) {
		return MapLookup{}, malformed("get map", "no key=\"...\", value=\"...\" in %.80q", l)
	}
	return MapLookup{Found: true, Key: l[k+len(kOpen) : v], Value: l[v+len(vOpen) : end]}, nil
}

// MapEntry is one line of `show map <map>`.
type MapEntry struct {
	Ref   string // HAProxy's entry reference, "0x55e9abad2450"
	Key   string
	Value string // may contain spaces
}

// ParseShowMap parses `show map <map>`: "<ref> <key> <value>" lines.
func ParseShowMap(ans string) ([]MapEntry, error) {
	var out []MapEntry
	for _, l := range lines(ans) {
		if strings.TrimSpace(l) == "" {
			continue
		}
		ref, rest, ok := strings.Cut(l, " ")
		key, value, ok2 := strings.Cut(rest, " ")
		if !ok || !ok2 || !strings.HasPrefix(ref, "0x") || key == "" {
			return nil, malformed("show map", "line %.80q is not <ref> <key> <value>", l)
		}
		out = append(out, MapEntry{Ref: ref, Key: key, Value: value})
	}
	return out, nil
}

// MapInfo is one map HAProxy has loaded (a line of `show map`).
type MapInfo struct {
	ID          int
	File        string // as written in the configuration
	Description string
}

// ParseMapList parses `show map` without argument: a "# id (file)
// description" header, then "<id> (<file>) <description>" lines.
func ParseMapList(ans string) ([]MapInfo, error) {
	ls := lines(ans)
	if len(ls) == 0 || !strings.HasPrefix(ls[0], "# id") {
		return nil, malformed("show map", "want a %q header, got %.40q", "# id (file) description", ans)
	}
	var out []MapInfo
	for _, l := range ls[1:] {
		if strings.TrimSpace(l) == "" {
			continue
		}
		idStr, rest, _ := strings.Cut(l, " ")
		id, err := strconv.Atoi(idStr)
		if err != nil || !strings.HasPrefix(rest, "(") {
			return nil, malformed("show map", "line %.80q is not <id> (<file>) <description>", l)
		}
		// The file name may itself contain ") ": the description starts at
		// "pattern loaded from file" when HAProxy wrote one.
		file, desc, ok := strings.Cut(rest[1:], ") pattern ")
		if ok {
			desc = "pattern " + desc
		} else if i := strings.LastIndex(rest, ")"); i > 0 {
			file, desc = rest[1:i], strings.TrimSpace(rest[i+1:])
		} else {
			return nil, malformed("show map", "line %.80q has no (<file>)", l)
		}
		out = append(out, MapInfo{ID: id, File: file, Description: desc})
	}
	return out, nil
}
