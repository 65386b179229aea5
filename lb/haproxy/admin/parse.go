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

// parseBackends parses `show backend`: a "# name" header, then one name a line.
func parseBackends(ans string) ([]string, error) {
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

// parseStat parses the CSV of `show stat`. The header line names the
// columns ("# pxname,svname,..."); rows may carry an empty trailing column.
func parseStat(ans string) ([]Stat, error) {
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

// MapLookup is the answer of `get map`.
type MapLookup struct {
	Found bool
	Key   string // the matched key, when Found
	Value string // its value, when Found
}

// parseGetMap parses `get map`, e.g.
//
//	type=str, case=sensitive, found=yes, idx=tree, key="app", value="app_blue", type="str"
//
// A map used with several output types answers one line per type; the
// first line is taken. HAProxy does not escape quotes in values: the value
// is what lies between `value="` and the last `", type="`.
func parseGetMap(ans string) (MapLookup, error) {
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

// MapInfo is one map HAProxy has loaded (a line of `show map`).
type MapInfo struct {
	ID          int
	File        string // as written in the configuration
	Description string
}

// parseMapList parses `show map` without argument: a "# id (file)
// description" header, then "<id> (<file>) <description>" lines.
func parseMapList(ans string) ([]MapInfo, error) {
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

// Weight is the answer of `get weight`.
type Weight struct {
	Current int // the weight in force (set weight changes it)
	Initial int // the configuration's weight, which a reload restores
}

// parseGetWeight parses `get weight`, e.g. "10 (initial 1)".
func parseGetWeight(ans string) (Weight, error) {
	ls := lines(ans)
	if len(ls) == 0 {
		return Weight{}, malformed("get weight", "empty answer")
	}
	var w Weight
	var rest string
	cur, after, ok := strings.Cut(strings.TrimSpace(ls[0]), " (initial ")
	if ok {
		rest, ok = strings.CutSuffix(after, ")")
	}
	if !ok {
		return Weight{}, malformed("get weight", "want %q, got %.80q", "<weight> (initial <weight>)", ls[0])
	}
	var err1, err2 error
	w.Current, err1 = strconv.Atoi(cur)
	w.Initial, err2 = strconv.Atoi(rest)
	if err1 != nil || err2 != nil || w.Current < 0 || w.Initial < 0 {
		return Weight{}, malformed("get weight", "weights in %.80q are not numbers", ls[0])
	}
	return w, nil
}
