package haproxy

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb/lbtest"
)

// fakeHAProxy emulates the runtime API commands the driver sends, with
// HAProxy 2.6's answers, over a real unix socket. Hooks let a test answer
// something else.
type fakeHAProxy struct {
	sock string

	mu       sync.Mutex
	backends []string
	status   map[string]string // backend -> its one server's status ("UP", "DOWN"...)
	// cur is each backend's one server's scur and qcur ("" = 0).
	cur  map[string][2]string
	maps map[string][]entry
	// split is the split backend ("" = none), with servers blue and green
	// (splitServers, "" = absent) whose statuses, weights and cookies
	// these maps hold; splitCookie is the backend's cookie name.
	split        string
	splitServers []string
	splitStatus  map[string]string
	weights      map[string]int
	cookies      map[string]string
	addrs        map[string]string
	splitCookie  string
	log          []string
	// answer, when set, may replace the answer to a command ("" = default).
	answer func(cmd string) string
	// after runs after a command was applied (outside the lock).
	after func(cmd string)
}

type entry struct{ key, value string }

// statHeader is HAProxy 2.6's show stat header, recorded.
var statHeader = func() string {
	data, err := os.ReadFile(filepath.Join("admin", "testdata", "answers", "show_stat_backend.txt"))
	if err != nil {
		panic(err)
	}
	h, _, _ := strings.Cut(string(data), "\n")
	return h
}()

func startFakeHAProxy(t *testing.T, mapFile string) *fakeHAProxy {
	t.Helper()
	dir, err := os.MkdirTemp("", "fh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeHAProxy{
		sock:     filepath.Join(dir, "admin.sock"),
		backends: []string{"app_blue", "app_green"},
		status:   map[string]string{"app_blue": "UP", "app_green": "UP"},
		maps:     map[string][]entry{mapFile: {{"app", "app_blue"}}},
		split:    "app_split", splitServers: []string{"blue", "green"},
		splitStatus: map[string]string{"blue": "UP", "green": "UP"},
		weights:     map[string]int{"blue": 100, "green": 0},
		cookies:     map[string]string{},
		addrs:       map[string]string{"blue": "127.0.0.1:5005", "green": "127.0.0.1:5006"},
	}
	lbtest.ServeLines(t, f.sock, func(c net.Conn, _ *bufio.Reader, cmd string) {
		ans := f.handle(cmd)
		if ans == "<hang>" { // applied, but the answer never comes
			time.Sleep(time.Second)
			return
		}
		io.WriteString(c, ans)
		if f.after != nil {
			f.after(cmd)
		}
	})
	return f
}

func (f *fakeHAProxy) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

func (f *fakeHAProxy) value(mapFile, key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.maps[mapFile] {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

func (f *fakeHAProxy) setStatus(backend, status string) {
	f.mu.Lock()
	f.status[backend] = status
	f.mu.Unlock()
}

func (f *fakeHAProxy) handle(cmd string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, cmd)
	if f.answer != nil {
		if a := f.answer(cmd); a != "" {
			return a
		}
	}
	w := strings.Fields(cmd)
	const unknownMap = "Unknown map identifier. Please use #<id> or <file>.\n\n"
	switch {
	case cmd == "show backend":
		all := f.backends
		if f.split != "" {
			all = append(slices.Clone(all), f.split)
		}
		return "# name\n" + strings.Join(all, "\n") + "\n\n"
	case len(w) == 3 && w[0] == "get" && w[1] == "weight", len(w) == 4 && w[0] == "set" && w[1] == "weight":
		be, srv, _ := strings.Cut(w[2], "/")
		if be != f.split || f.split == "" {
			return "No such backend.\n\n"
		}
		if !slices.Contains(f.splitServers, srv) {
			return "No such server.\n\n"
		}
		if w[0] == "get" {
			return fmt.Sprintf("%d (initial 1)\n\n", f.weights[srv])
		}
		n, err := strconv.Atoi(w[3])
		if err != nil || n < 0 || n > 256 {
			return "Absolute weight can only be between 0 and 256 inclusive.\n\n"
		}
		f.weights[srv] = n
		return "\n"
	case len(w) >= 2 && w[0] == "show" && w[1] == "stat":
		var b strings.Builder
		b.WriteString(statHeader + "\n")
		cols := strings.Split(strings.TrimPrefix(statHeader, "# "), ",")
		for _, be := range f.backends {
			if len(w) > 2 && w[2] != be {
				continue
			}
			row := make([]string, len(cols))
			for i, c := range cols {
				switch c {
				case "pxname":
					row[i] = be
				case "svname":
					row[i] = "srv"
				case "status":
					row[i] = f.status[be]
				case "type":
					row[i] = "2"
				case "check_desc":
					row[i] = "Layer7 wrong status"
				case "scur", "qcur":
					row[i] = cmp.Or(f.cur[be][map[string]int{"scur": 0, "qcur": 1}[c]], "0")
				}
			}
			b.WriteString(strings.Join(row, ",") + "\n")
		}
		if f.split != "" && (len(w) == 2 || w[2] == f.split) {
			rows := append(slices.Clone(f.splitServers), "BACKEND")
			if len(w) > 2 {
				rows = rows[:len(rows)-1] // `show stat <backend> 4 -1`: servers only
			}
			for _, srv := range rows {
				row := make([]string, len(cols))
				for i, c := range cols {
					switch c {
					case "pxname":
						row[i] = f.split
					case "svname":
						row[i] = srv
					case "status":
						row[i] = cmp.Or(f.splitStatus[srv], "UP")
					case "type":
						row[i] = map[bool]string{true: "1", false: "2"}[srv == "BACKEND"]
					case "addr":
						row[i] = f.addrs[srv]
					case "cookie":
						row[i] = f.cookies[srv]
						if srv == "BACKEND" {
							row[i] = f.splitCookie
						}
					case "scur", "qcur":
						row[i] = cmp.Or(f.cur[f.split+"/"+srv][map[string]int{"scur": 0, "qcur": 1}[c]], "0")
					}
				}
				b.WriteString(strings.Join(row, ",") + "\n")
			}
		}
		return b.String() + "\n"
	case cmd == "show map":
		var b strings.Builder
		b.WriteString("# id (file) description\n")
		i := 0
		for m := range f.maps {
			fmt.Fprintf(&b, "%d (%s) pattern loaded from file '%s' used by map at file 'h.cfg' line 13. curr_ver=0 next_ver=0 entry_cnt=1\n", i, m, m)
			i++
		}
		return b.String() + "\n"
	case len(w) == 4 && w[0] == "get" && w[1] == "map":
		es, ok := f.maps[w[2]]
		if !ok {
			return unknownMap
		}
		for _, e := range es {
			if e.key == w[3] {
				return fmt.Sprintf("type=str, case=sensitive, found=yes, idx=tree, key=%q, value=%q, type=\"str\"\n\n", e.key, e.value)
			}
		}
		return "type=str, case=sensitive, found=no\n\n"
	case len(w) == 5 && w[0] == "set" && w[1] == "map":
		es, ok := f.maps[w[2]]
		if !ok {
			return unknownMap
		}
		found := false
		for i := range es {
			if es[i].key == w[3] {
				es[i].value, found = w[4], true
			}
		}
		if !found {
			return "entry not found.\n\n"
		}
		return "\n"
	case len(w) == 5 && w[0] == "add" && w[1] == "map":
		if _, ok := f.maps[w[2]]; !ok {
			return unknownMap
		}
		f.maps[w[2]] = append(f.maps[w[2]], entry{w[3], w[4]})
		return "\n"
	case len(w) == 4 && w[0] == "del" && w[1] == "map":
		es, ok := f.maps[w[2]]
		if !ok {
			return unknownMap
		}
		kept := es[:0]
		for _, e := range es {
			if e.key != w[3] {
				kept = append(kept, e)
			}
		}
		if len(kept) == len(es) {
			return "entry not found.\n\n"
		}
		f.maps[w[2]] = kept
		return "\n"
	}
	return "Unknown command, but maybe one of the following ones is a better match:\n  help\n\n"
}
