package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadCase is one config and what Load must make of it: an error holding
// every string of wantErr, or success and check's approval.
type loadCase struct {
	name    string
	yaml    string
	env     map[string]string
	wantErr []string
	check   func(*Config) string
}

func runLoadCases(t *testing.T, cases []loadCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			cfg, err := Load(Source{Path: path, Getenv: envOf(tc.env)})
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if tc.check != nil {
					if msg := tc.check(cfg); msg != "" {
						t.Error(msg)
					}
				}
				return
			}
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid (exit 2)", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// one is a service "app" with a command that exists, plus extra lines.
func one(extra string) string {
	return "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n" + extra
}

// TestLoadZeroDurations: a duration written as 0 is no longer mistaken for
// a missing key. The health durations refuse it (naming service, key, line
// and minimum); stop_grace 0 means no grace, drain_timeout 0 no drain.
func TestLoadZeroDurations(t *testing.T) {
	app := func(c *Config) *Service { return c.Services["app"] }
	runLoadCases(t, []loadCase{
		{name: "health.interval 0s", yaml: one("    health:\n      interval: 0s\n"),
			wantErr: []string{`service "app": health.interval is 0s (line 7): it must be > 0, at least 1ms`, "default 1s"}},
		{name: "health.timeout 0", yaml: one("    health: {timeout: 0}\n"),
			wantErr: []string{`service "app": health.timeout is 0s (line 6)`, "at least 1ms", "default 30s"}},
		{name: "health.request_timeout 0s", yaml: one("    health: {request_timeout: 0s}\n"),
			wantErr: []string{`service "app": health.request_timeout is 0s (line 6)`, "default 2s"}},
		{name: "below the minimum", yaml: one("    health: {interval: 500us}\n"),
			wantErr: []string{`health.interval is 500µs (line 6): it must be > 0, at least 1ms`}},
		{name: "0 through an alias", yaml: one("    health: {interval: &zero 0s, timeout: *zero}\n"),
			wantErr: []string{"health.interval is 0s (line 6)", "health.timeout is 0s (line 6)"}},
		{name: "0 through a merge key",
			yaml: one("    health: &h {request_timeout: 0s}\n") +
				"  web:\n    command: [\"true\"]\n    blue: {port: 7103}\n    green: {port: 7104}\n    health: {<<: *h}\n    lb: {builtin: {listen: \"127.0.0.1:7105\"}}\n",
			wantErr: []string{`service "app": health.request_timeout is 0s`, `service "web": health.request_timeout is 0s`}},
		{name: "stop_grace 0s means no grace", yaml: one("    stop_grace: 0s\n"),
			check: func(c *Config) string { return want(app(c).StopGrace.D(), 0) }},
		{name: "stop_grace 0 means no grace", yaml: one("    stop_grace: 0\n"),
			check: func(c *Config) string { return want(app(c).StopGrace.D(), 0) }},
		{name: "stop_grace left out is 10s", yaml: one(""),
			check: func(c *Config) string { return want(app(c).StopGrace.D(), 10*time.Second) }},
		{name: "drain_timeout 0s means no drain", yaml: one("    drain_timeout: 0s\n"),
			check: func(c *Config) string { return want(app(c).DrainTimeout.D(), 0) }},
		{name: "drain_timeout left out is 30s", yaml: one(""),
			check: func(c *Config) string { return want(app(c).DrainTimeout.D(), 30*time.Second) }},
		{name: "drain_timeout 2500ms", yaml: one("    drain_timeout: 2500ms\n"),
			check: func(c *Config) string { return want(app(c).DrainTimeout.D(), 2500*time.Millisecond) }},
		{name: "drain_timeout negative", yaml: one("    drain_timeout: -1s\n"),
			wantErr: []string{`invalid duration "-1s"`}},
		{name: "pause_timeout left out is 30s", yaml: one(""),
			check: func(c *Config) string { return want(app(c).PauseTimeout.D(), 30*time.Second) }},
		{name: "pause_timeout 90s", yaml: one("    pause_timeout: 90s\n"),
			check: func(c *Config) string { return want(app(c).PauseTimeout.D(), 90*time.Second) }},
		{name: "pause_timeout negative", yaml: one("    pause_timeout: -1s\n"),
			wantErr: []string{`invalid duration "-1s"`}},
		{name: "drain_timeout not a duration", yaml: one("    drain_timeout: soon\n"),
			wantErr: []string{"soon"}},
		{name: "null keys are the defaults", yaml: one("    stop_grace: ~\n    health:\n      interval:\n      timeout: null\n"),
			check: func(c *Config) string {
				return want(fmt.Sprint(app(c).StopGrace, app(c).Health.Interval, app(c).Health.Timeout), "10s 1s 30s")
			}},
		{name: "1ms is accepted", yaml: one("    health: {interval: 1ms, timeout: 1ms, request_timeout: 1ms}\n"),
			check: func(c *Config) string {
				h := app(c).Health
				return want(fmt.Sprint(h.Interval, h.Timeout, h.RequestTimeout), "1ms 1ms 1ms")
			}},
	})
}

// TestLoadCommandExists: a slot command or an nginx test/reload command that
// cannot be run is refused at load, unless a template makes it unknowable.
func TestLoadCommandExists(t *testing.T) {
	dir := t.TempDir()
	executable(t, dir, "bin/app")
	plain := filepath.Join(dir, "bin", "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(plain, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	svc := func(lines string) string {
		return "services:\n  app:\n" + lines + "    blue: {port: 7101}\n    green: {port: 7102}\n"
	}
	nginx := func(test, reload string) string {
		return one(fmt.Sprintf("    lb: {driver: nginx, nginx: {test: %s, reload: %s}}\n", test, reload))
	}
	runLoadCases(t, []loadCase{
		{name: "not on PATH", yaml: svc("    command: [\"bgd-no-such-command\", \"{{.Port}}\"]\n"),
			wantErr: []string{`service "app": command "bgd-no-such-command" is not on PATH`}},
		{name: "on PATH", yaml: svc("    command: [\"sh\", \"-c\", \"exec sleep 1\"]\n")},
		{name: "absolute, missing", yaml: svc("    command: [\"" + dir + "/bin/nope\"]\n"),
			wantErr: []string{`service "app": command "` + dir + `/bin/nope" cannot be run: it does not exist`}},
		{name: "absolute, exists", yaml: svc("    command: [\"" + dir + "/bin/app\"]\n")},
		{name: "not executable", yaml: svc("    command: [\"" + dir + "/bin/plain\"]\n"),
			wantErr: []string{`command "` + dir + `/bin/plain" is not executable (mode -rw-r--r--): chmod +x it`}},
		{name: "a directory", yaml: svc("    command: [\"" + dir + "/bin\"]\n"),
			wantErr: []string{`command "` + dir + `/bin" is a directory`}},
		{name: "relative to workdir, exists", yaml: svc("    command: [\"./bin/app\"]\n    workdir: " + dir + "\n")},
		{name: "relative to workdir, missing", yaml: svc("    command: [\"./bin/nope\"]\n    workdir: " + dir + "\n"),
			wantErr: []string{`command "./bin/nope" (` + dir + `/bin/nope) cannot be run: it does not exist`}},
		{name: "workdir missing", yaml: svc("    command: [\"./bin/app\"]\n    workdir: " + dir + "/nope\n"),
			wantErr: []string{`service "app": workdir "` + dir + `/nope" is not a directory (it does not exist)`}},
		{name: "template in command[0] is not checked", yaml: svc("    command: [\"releases/{{.Release}}/bin/app\"]\n")},
		{name: "relative command under a workdir template is not checked",
			yaml: svc("    command: [\"./bin/app\"]\n    workdir: \"" + dir + "/releases/{{.Release}}\"\n")},
		{name: "absolute command under a workdir template is checked",
			yaml:    svc("    command: [\"/nonexistent/bgd-app\"]\n    workdir: \"" + dir + "/releases/{{.Release}}\"\n"),
			wantErr: []string{`command "/nonexistent/bgd-app" cannot be run: it does not exist`}},
		{name: "bare command under a workdir template is checked",
			yaml:    svc("    command: [\"bgd-no-such-command\"]\n    workdir: \"{{.Release}}\"\n"),
			wantErr: []string{`command "bgd-no-such-command" is not on PATH`}},
		{name: "nginx test not on PATH", yaml: nginx(`["bgd-no-such-nginx", "-t"]`, `["true"]`),
			wantErr: []string{`service "app": lb.nginx.test: command "bgd-no-such-nginx" is not on PATH`}},
		{name: "nginx reload missing", yaml: nginx(`["true"]`, `["/nonexistent/nginx", "-s", "reload"]`),
			wantErr: []string{`service "app": lb.nginx.reload: command "/nonexistent/nginx" cannot be run`}},
		{name: "nginx commands that exist", yaml: nginx(`["true", "-t"]`, `["sh", "-c", "exit 0"]`)},
		{name: "nginx commands unchecked for another driver", yaml: one("    lb: {nginx: {test: [bgd-no-such-nginx]}}\n")},
	})
}

func TestLoadEmbeddedDefaultCommandChecked(t *testing.T) {
	t.Chdir(t.TempDir())
	if _, err := Load(Source{Getenv: envOf(nil), Self: executable(t, t.TempDir(), "bgd")}); err != nil {
		t.Fatalf("embedded default with an executable self: %v", err)
	}
	_, err := Load(Source{Getenv: envOf(nil), Self: "/nonexistent/bgd"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(fmtErr(err), `command "/nonexistent/bgd" cannot be run`) {
		t.Errorf("embedded default with a missing self: %v, want ErrInvalid naming it", err)
	}
}

// TestLoadTemplateFields: templates are executed against sample values at
// load, so a misspelt field is refused naming the key, service and field.
func TestLoadTemplateFields(t *testing.T) {
	svc := func(lines string) string {
		return "services:\n  app:\n" + lines + "    blue: {port: 7101}\n    green: {port: 7102}\n"
	}
	runLoadCases(t, []loadCase{
		{name: "command field typo", yaml: svc("    command: [\"true\", \"--port\", \"{{.Prot}}\"]\n"),
			wantErr: []string{`service "app": command[2] "{{.Prot}}" names field .Prot, which does not exist: use {{.Port}}, {{.Color}} or {{.Release}}`}},
		{name: "workdir field typo", yaml: svc("    command: [\"true\"]\n    workdir: \"/srv/{{.Relase}}\"\n"),
			wantErr: []string{`service "app": workdir "/srv/{{.Relase}}" names field .Relase`}},
		{name: "env value field typo", yaml: svc("    command: [\"true\"]\n    env: {URL: \"http://x:{{.Prto}}/\"}\n"),
			wantErr: []string{`service "app": env.URL "http://x:{{.Prto}}/" names field .Prto`}},
		{name: "lower-case field", yaml: svc("    command: [\"true\", \"{{.port}}\"]\n"),
			wantErr: []string{`command[1] "{{.port}}" names field .port`}},
		{name: "field of a field", yaml: svc("    command: [\"true\", \"{{.Port.Number}}\"]\n"),
			wantErr: []string{`command[1] "{{.Port.Number}}" names field .Number of a int`}},
		{name: "fails only for green", yaml: svc("    command: [\"true\", \"{{if eq .Color \\\"green\\\"}}{{.Nope}}{{end}}\"]\n"),
			wantErr: []string{"names field .Nope"}},
		{name: "does not execute", yaml: svc("    command: [\"true\", \"{{index .Color 99}}\"]\n"),
			wantErr: []string{`command[1] "{{index .Color 99}}" does not expand (with blue, port 7101, release v1)`, "out of range"}},
		{name: "parse error still reported", yaml: svc("    command: [\"true\", \"{{.Port\"]\n"),
			wantErr: []string{`command[1] "{{.Port" is not a valid template`}},
		{name: "expands past 128 KiB", yaml: svc("    command: [\"true\", \"{{range 1000000}}xx{{end}}\"]\n"),
			wantErr: []string{"expands to more than 128 KiB"}},
		{name: "printf wider than 128 KiB", yaml: svc("    command: [\"true\", \"{{printf \\\"%0999999999d\\\" .Port}}\"]\n"),
			wantErr: []string{"expands to more than 128 KiB"}},
		{name: "printf width from an argument", yaml: svc("    command: [\"true\", \"{{printf \\\"%*d\\\" 999999999 .Port}}\"]\n"),
			wantErr: []string{"expands to more than 128 KiB"}},
		{name: "printf precision wider than 128 KiB", yaml: svc("    command: [\"true\", \"{{printf \\\"%.999999999f\\\" 1.0}}\"]\n"),
			wantErr: []string{"expands to more than 128 KiB"}},
		{name: "printf with long digits outside a verb", yaml: svc("    command: [\"true\", \"{{printf \\\"id-12345678901234-%d%%\\\" .Port}}\"]\n")},
		{name: "printf of ordinary width", yaml: svc("    command: [\"true\", \"{{printf \\\"%05d\\\" .Port}}\"]\n")},
		{name: "valid templates", yaml: svc("    command: [\"true\", \"{{.Port}}\", \"{{if eq .Color \\\"green\\\"}}g{{else}}b{{end}}\", \"{{.Release}}\"]\n" +
			"    workdir: \"/srv/{{.Release}}\"\n    env: {ADDR: \"127.0.0.1:{{.Port}}\", PLAIN: \"no template\"}\n")},
	})
}

// TestTemplateBudget: a template that loops for long is refused, not run to
// the end, and the other templates are not held up.
func TestTemplateBudget(t *testing.T) {
	old := templateBudget
	templateBudget = 50 * time.Millisecond
	t.Cleanup(func() { templateBudget = old })
	path := writeConfig(t, one("    env: {SLOW: \"{{range 20000000}}{{end}}\"}\n"))
	start := time.Now()
	_, err := Load(Source{Path: path, Getenv: envOf(nil)})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(fmtErr(err), `env.SLOW "{{range 20000000}}{{end}}" takes too long to expand`) {
		t.Errorf("Load = %v, want the slow template refused", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Load took %s", d)
	}
}

// TestListenCollisions: addresses collide whatever their spelling, across
// services, drivers and slot ports; distinct specific addresses do not.
func TestListenCollisions(t *testing.T) {
	svc := func(name string, blue int, lb string) string {
		return fmt.Sprintf("  %s:\n    command: [\"true\"]\n    blue: {port: %d}\n    green: {port: %d}\n    lb: %s\n", name, blue, blue+1, lb)
	}
	builtin := func(listen string) string { return fmt.Sprintf("{builtin: {listen: %q}}", listen) }
	two := func(a, b string) string { return "services:\n" + svc("a", 7101, a) + svc("b", 7201, b) }
	collide := `service "b": lb.builtin.listen port 8080`
	runLoadCases(t, []loadCase{
		{name: "localhost vs 127.0.0.1", yaml: two(builtin("localhost:8080"), builtin("127.0.0.1:8080")),
			wantErr: []string{collide + ` on 127.0.0.1 is already used by service "a" (lb.builtin.listen localhost:8080)`}},
		{name: "0.0.0.0 vs 127.0.0.1", yaml: two(builtin("0.0.0.0:8080"), builtin("127.0.0.1:8080")), wantErr: []string{collide}},
		{name: "127.0.0.1 vs 0.0.0.0", yaml: two(builtin("127.0.0.1:8080"), builtin("0.0.0.0:8080")),
			wantErr: []string{`lb.builtin.listen port 8080 on every address is already used by service "a"`}},
		{name: "[::] vs a specific address", yaml: two(builtin("[::]:8080"), builtin("10.1.2.3:8080")), wantErr: []string{collide}},
		{name: ":8080 vs 127.0.0.1", yaml: two(builtin(":8080"), builtin("127.0.0.1:8080")), wantErr: []string{collide}},
		{name: "[::1] vs localhost", yaml: two(builtin("[::1]:8080"), builtin("localhost:8080")), wantErr: []string{collide}},
		{name: "IPv4-mapped vs IPv4", yaml: two(builtin("[::ffff:127.0.0.1]:8080"), builtin("127.0.0.1:8080")), wantErr: []string{collide}},
		{name: "distinct specific addresses", yaml: two(builtin("10.1.2.3:8080"), builtin("10.1.2.4:8080"))},
		{name: "127.0.0.1 and ::1 are distinct", yaml: two(builtin("127.0.0.1:8080"), builtin("[::1]:8080"))},
		{name: "same host, other port", yaml: two(builtin("127.0.0.1:8080"), builtin("127.0.0.1:8081"))},
		{name: "proxy on another service's slot port", yaml: two(builtin("127.0.0.1:8080"), builtin("0.0.0.0:7102")),
			wantErr: []string{`service "b": lb.builtin.listen port 7102 on every address is already used by service "a" green`}},
		{name: "proxy on a slot port on another address", yaml: two(builtin("10.1.2.3:7101"), builtin("127.0.0.1:8080")),
			wantErr: []string{`service "a": lb.builtin.listen port 7101 on 10.1.2.3 is already used by service "a" blue`}},
		{name: "slot port on another service's proxy", yaml: two(builtin("127.0.0.1:7201"), builtin("127.0.0.1:8080")),
			wantErr: []string{`service "b": blue port 7201 is already used by service "a" (lb.builtin.listen 127.0.0.1:7201)`}},
		{name: "nginx on a slot port", yaml: two(`{driver: nginx, nginx: {listen: "7102", test: ["true"], reload: ["true"]}}`, builtin("127.0.0.1:8080")),
			wantErr: []string{`service "a": lb.nginx.listen port 7102 on every address is already used by service "a" green`}},
		{name: "nginx default templates on one port", yaml: two(`{driver: nginx, nginx: {listen: "80", test: ["true"], reload: ["true"]}}`,
			`{driver: nginx, nginx: {listen: "127.0.0.1:80", test: ["true"], reload: ["true"]}}`),
			wantErr: []string{`service "b": lb.nginx.listen port 80 on 127.0.0.1 is already used by service "a" (lb.nginx.listen :80)`}},
		{name: "nginx own templates share a port", yaml: two(`{driver: nginx, nginx: {listen: "80", template: a.tmpl, test: ["true"], reload: ["true"]}}`,
			`{driver: nginx, nginx: {listen: "*:80", template: b.tmpl, test: ["true"], reload: ["true"]}}`)},
		{name: "nginx vs builtin", yaml: two(`{driver: nginx, nginx: {listen: "8080", template: a.tmpl, test: ["true"], reload: ["true"]}}`, builtin("localhost:8080")),
			wantErr: []string{collide + ` on localhost is already used by service "a" (lb.nginx.listen :8080)`}},
		{name: "nginx vs haproxy", yaml: two(`{driver: nginx, nginx: {listen: "[::]:80", template: a.tmpl, test: ["true"], reload: ["true"]}}`,
			`{driver: haproxy, haproxy: {listen: "80", template: b.tmpl}}`),
			wantErr: []string{`service "b": lb.haproxy.listen port 80 on every address is already used by service "a"`}},
		{name: "haproxy default snippets on one port", yaml: two(`{driver: haproxy}`, `{driver: haproxy}`),
			wantErr: []string{`service "b": lb.haproxy.listen port 80`}},
		{name: "haproxy admin socket on a slot port", yaml: two(`{driver: haproxy, haproxy: {socket: "tcp://127.0.0.1:7101"}}`, builtin("127.0.0.1:8080")),
			wantErr: []string{`service "a": lb.haproxy.socket port 7101 on 127.0.0.1 is already used by service "a" blue`}},
		{name: "haproxy services share the admin socket", yaml: two(`{driver: haproxy, haproxy: {socket: "tcp://127.0.0.1:9999", listen: "81"}}`,
			`{driver: haproxy, haproxy: {socket: "tcp://127.0.0.1:9999", listen: "82"}}`)},
		{name: "haproxy admin socket port out of range", yaml: two(`{driver: haproxy, haproxy: {socket: "tcp://127.0.0.1:99999"}}`, builtin("127.0.0.1:8080")),
			wantErr: []string{`lb.haproxy.socket "tcp://127.0.0.1:99999": want tcp://host:port (port 1-65535)`}},
		{name: "unused driver sections do not count", yaml: two(builtin("127.0.0.1:8080"), `{builtin: {listen: "127.0.0.1:8081"}, nginx: {listen: "8080"}}`)},
	})
}

func TestLoadFileLimits(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yml")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 10<<20); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.yml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	exact := filepath.Join(dir, "exact.yml")
	if err := os.WriteFile(exact, []byte(one("")+"#"+strings.Repeat("x", MaxFileSize-len(one(""))-2)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		path string
		want string // "" for success
	}{
		{"/dev/zero", "/dev/zero", "config /dev/zero is a character device, not a regular file"},
		{"FIFO", fifo, "config " + fifo + " is a named pipe (FIFO), not a regular file"},
		{"directory", dir, "config " + dir + " is a directory, not a regular file"},
		{"10 MB", big, "config " + big + " is larger than 1 MiB (10485760 bytes)"},
		{"exactly 1 MiB", exact, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := Load(Source{Path: tc.path, Getenv: envOf(nil)})
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Load blocked")
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(fmtErr(err), tc.want) {
				t.Errorf("Load = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

// TestReadFileProcfs: a regular file whose size stat does not tell (procfs
// says 0) is read through the limit, not trusted to be empty.
func TestReadFileProcfs(t *testing.T) {
	data, err := readFile("/proc/self/status")
	if err != nil || len(data) == 0 {
		t.Fatalf("readFile of a 0-size procfs file: %d bytes, %v", len(data), err)
	}
}

// TestLoadAliasBomb: YAML aliases that expand exponentially ("billion
// laughs") are refused quickly as ErrInvalid. Nested lists cannot expand in
// bgd's schema (a list of lists is a type error before any expansion); merge
// keys can, through maps such as env, and yaml.v3's alias ratio stops them.
func TestLoadAliasBomb(t *testing.T) {
	var laughs strings.Builder
	laughs.WriteString("x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i < 10; i++ {
		p := fmt.Sprintf("*x%d", i-1)
		fmt.Fprintf(&laughs, "x%d: &x%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(p+", ", 9), ", "))
	}
	// Service sI's env merges nine copies of s(I-1)'s: 9^12 map decodes.
	var merges strings.Builder
	merges.WriteString("services:\n")
	for i := range 13 {
		env := "{a: b}"
		if i > 0 {
			p := fmt.Sprintf("*e%d", i-1)
			env = "{<<: [" + strings.TrimSuffix(strings.Repeat(p+", ", 9), ", ") + "]}"
		}
		fmt.Fprintf(&merges, "  s%d:\n    command: [\"true\"]\n    blue: {port: %d}\n    green: {port: %d}\n    env: &e%d %s\n    lb: {builtin: {listen: \"127.0.0.1:%d\"}}\n",
			i, 7101+3*i, 7102+3*i, i, env, 7103+3*i)
	}
	cases := []struct{ name, yaml, want string }{
		{"billion laughs", laughs.String() + one(""), `unknown key "x0"`},
		{"billion laughs in a command", one("    env:\n") + indent(laughs.String(), "      ") + "    lb: {nginx: {test: *x9}}\n", "cannot unmarshal !!seq into string"},
		{"merge keys in env", merges.String(), "document contains excessive aliasing: YAML aliases (*name) expand to too much"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Load(Source{Path: writeConfig(t, tc.yaml), Getenv: envOf(nil)})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want ErrInvalid containing %q", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Load took %s to refuse an alias bomb", d)
			}
		})
	}
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// TestLoadManyServices: 2 000 services sharing one command load (every
// check is a map look-up), and 2 000 bad ones give a capped message.
func TestLoadManyServices(t *testing.T) {
	var good, bad strings.Builder
	good.WriteString("services:\n")
	bad.WriteString("services:\n")
	for i := range 2000 {
		port := 10000 + 3*i
		fmt.Fprintf(&good, "  s%d:\n    command: [\"true\", \"{{.Port}}\"]\n    blue: {port: %d}\n    green: {port: %d}\n    lb: {builtin: {listen: \"127.0.0.1:%d\"}}\n", i, port, port+1, port+2)
		fmt.Fprintf(&bad, "  s%d:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n", i)
	}
	cfg, err := Load(Source{Path: writeConfig(t, good.String()), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 2000 || cfg.Services["s1999"].Green.Port != 10000+3*1999+1 {
		t.Errorf("loaded %d services, want 2000 with their ports", len(cfg.Services))
	}
	_, err = Load(Source{Path: writeConfig(t, bad.String()), Getenv: envOf(nil)})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load = %v, want ErrInvalid", err)
	}
	if n := strings.Count(err.Error(), "is already used by"); n != MaxProblems {
		t.Errorf("error lists %d problems, want the cap %d", n, MaxProblems)
	}
	if !strings.HasSuffix(err.Error(), fmt.Sprintf("and %d more problems", 3*1999-MaxProblems)) {
		t.Errorf("error does not end with the count of problems left out: ...%s", err.Error()[len(err.Error())-80:])
	}
}

// TestAddrIndexSharedPort: thousands of nginx services with their own
// templates share port 80 with one check each, and one default-template
// service among them is still caught.
func TestAddrIndexSharedPort(t *testing.T) {
	x := newAddrIndex()
	for i := range 5000 {
		if other := x.add(newUse(fmt.Sprintf("10.0.%d.%d", i/250, i%250), 80, "nginx", fmt.Sprint(i))); other != nil {
			t.Fatalf("use %d collides with %s", i, other.who)
		}
	}
	if other := x.add(newUse("", 80, "", "default")); other == nil || other.who != "0" {
		t.Errorf("an exclusive wildcard on a shared port: collides with %v, want the first use", other)
	}
	if len(x.ports[80].hosts) != 5000 {
		t.Errorf("%d host buckets on port 80, want 5000", len(x.ports[80].hosts))
	}
}

// TestLoadEnvAndArgs: what could not reach a process intact (NUL, '=' in a
// name), what would lie to bgd (PORT in env), and environment overrides out
// of range are refused, naming the key.
func TestLoadEnvAndArgs(t *testing.T) {
	long := strings.Repeat("a", MaxName+1)
	runLoadCases(t, []loadCase{
		{name: "env key with =", yaml: one("    env: {\"A=B\": x}\n"), wantErr: []string{`service "app": env key "A=B"`, "without '='"}},
		{name: "env key empty", yaml: one("    env: {\"\": x}\n"), wantErr: []string{`env key ""`}},
		{name: "env key with NUL", yaml: one("    env: {\"A\\0\": x}\n"), wantErr: []string{`env key "A\x00"`}},
		{name: "env value with NUL", yaml: one("    env: {A: \"x\\0y\"}\n"), wantErr: []string{`env.A "x\x00y" contains a NUL byte`}},
		{name: "env overrides PORT", yaml: one("    env: {PORT: \"9999\"}\n"), wantErr: []string{`service "app": env.PORT: bgd sets PORT, BG_COLOR and BG_RELEASE`}},
		{name: "env overrides BG_COLOR", yaml: one("    env: {BG_COLOR: red}\n"), wantErr: []string{"env.BG_COLOR"}},
		{name: "command arg with NUL", yaml: one("    command: [\"true\", \"a\\0b\"]\n")[0:0] + "services:\n  app:\n    command: [\"true\", \"a\\0b\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n",
			wantErr: []string{`command[1] "a\x00b" contains a NUL byte`}},
		{name: "workdir with NUL", yaml: one("    workdir: \"/tmp\\0x\"\n"), wantErr: []string{`workdir "/tmp\x00x" contains a NUL byte`}},
		{name: "service name too long", yaml: "services:\n  " + long + ":\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n",
			wantErr: []string{"characters long: at most 128"}},
		{name: "BLUE_PORT out of range", yaml: one(""), env: map[string]string{"BLUE_PORT": "70000"},
			wantErr: []string{"BLUE_PORT=70000: blue port 70000 is out of range 1-65535"}},
		{name: "GREEN_PORT zero", yaml: one(""), env: map[string]string{"GREEN_PORT": "0"},
			wantErr: []string{"GREEN_PORT=0: green port 0 is out of range"}},
		{name: "BLUE_PORT with a sign", yaml: one(""), env: map[string]string{"BLUE_PORT": "+7201"}, wantErr: []string{`BLUE_PORT="+7201" is not a port number`}},
		{name: "BG_PROXY_PORT out of range", yaml: one(""), env: map[string]string{"BG_PROXY_PORT": "99999"},
			wantErr: []string{"BG_PROXY_PORT=99999: proxy port 99999 is out of range 1-65535"}},
		{name: "BG_PROXY_PORT negative", yaml: one(""), env: map[string]string{"BG_PROXY_PORT": "-1"}, wantErr: []string{`BG_PROXY_PORT="-1" is not a port number`}},
		{name: "BG_PROXY_PORT on a slot port", yaml: one(""), env: map[string]string{"BG_PROXY_PORT": "7101"}, wantErr: []string{"lb.builtin.listen port 7101"}},
		{name: "BG_PROXY_PORT keeps an IPv6 host", yaml: one("    lb: {builtin: {listen: \"[::1]:5004\"}}\n"), env: map[string]string{"BG_PROXY_PORT": "7204"},
			check: func(c *Config) string { return want(c.Services["app"].LB.Builtin.Listen, "[::1]:7204") }},
		{name: "builtin listen with a signed port", yaml: one("    lb: {builtin: {listen: \"127.0.0.1:+80\"}}\n"), wantErr: []string{`lb.builtin.listen "127.0.0.1:+80" is not host:port`}},
	})
}

// TestLoadDocumentsAndPaths: a second YAML document would be ignored
// silently, and a NUL byte can reach no path: both are refused.
func TestLoadDocumentsAndPaths(t *testing.T) {
	runLoadCases(t, []loadCase{
		{name: "second document", yaml: one("") + "---\nservices: {}\n",
			wantErr: []string{"line 7: a second YAML document, which bgd would ignore"}},
		{name: "second document not YAML", yaml: one("") + "---\n- [\n", wantErr: []string{"after the first YAML document: line 7: did not find expected node content"}},
		{name: "trailing --- is harmless", yaml: one("") + "---\n# nothing\n"},
		{name: "document end marker is harmless", yaml: one("") + "...\n"},
		{name: "state_dir with NUL", yaml: "state_dir: \"a\\0b\"\n" + one(""), wantErr: []string{`state_dir "a\x00b"`}},
		{name: "BG_STATE_FILE with NUL", yaml: one(""), env: map[string]string{"BG_STATE_FILE": "a\x00b"}, wantErr: []string{`BG_STATE_FILE "a\x00b"`}},
		{name: "nginx template with newline", yaml: one("    lb: {driver: nginx, nginx: {template: \"a\\nb\", test: [\"true\"], reload: [\"true\"]}}\n"),
			wantErr: []string{`lb.nginx.template "a\nb" is not a usable path`}},
	})
}

// TestLoadAnalysis: the analysis thresholds' defaults, and values that
// mean nothing refused with the key.
func TestLoadAnalysis(t *testing.T) {
	app := func(c *Config) *Service { return c.Services["app"] }
	runLoadCases(t, []loadCase{
		{name: "defaults: no window, 1s, 1%, 50 requests", yaml: one(""),
			check: func(c *Config) string {
				a := app(c).Analysis
				return want(fmt.Sprint(a.Window, a.Interval, a.ErrorRate(), a.MaxP99, a.MaxP99Ratio, a.MinRequests), "0s 1s 0.01 0s 0 50")
			}},
		{name: "all set", yaml: one("    analysis: {window: 30s, interval: 250ms, max_error_rate: 0, max_p99: 300ms, max_p99_ratio: 2.5, min_requests: 10}\n"),
			check: func(c *Config) string {
				a := app(c).Analysis
				return want(fmt.Sprint(a.Window, a.Interval, a.ErrorRate(), a.MaxP99, a.MaxP99Ratio, a.MinRequests), "30s 250ms 0 300ms 2.5 10")
			}},
		{name: "error rate above 1", yaml: one("    analysis: {max_error_rate: 5}\n"),
			wantErr: []string{`service "app": analysis.max_error_rate is 5: a share of requests, 0-1`}},
		{name: "negative error rate", yaml: one("    analysis: {max_error_rate: -0.1}\n"),
			wantErr: []string{"analysis.max_error_rate is -0.1"}},
		{name: "ratio below 1", yaml: one("    analysis: {max_p99_ratio: 0.5}\n"),
			wantErr: []string{"analysis.max_p99_ratio is 0.5: at least 1"}},
		{name: "interval too short", yaml: one("    analysis: {interval: 1ms}\n"),
			wantErr: []string{"analysis.interval is 1ms: at least 10ms"}},
		{name: "window shorter than the interval", yaml: one("    analysis: {window: 1s, interval: 2s}\n"),
			wantErr: []string{"analysis.window 1s is shorter than analysis.interval 2s"}},
		{name: "negative min_requests", yaml: one("    analysis: {min_requests: -1}\n"),
			wantErr: []string{"analysis.min_requests is -1"}},
		{name: "unknown key", yaml: one("    analysis: {max_errors: 3}\n"),
			wantErr: []string{`unknown key "max_errors"`}},
		{name: "services whose canary cookies collide",
			yaml: "services:\n  shop.api:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n" +
				"  shop_api:\n    command: [\"true\"]\n    blue: {port: 7103}\n    green: {port: 7104}\n    lb: {builtin: {listen: \"127.0.0.1:7105\"}}\n",
			wantErr: []string{`services "shop.api" and "shop_api" differ only by '.', '-' or '_'`, "bgd_shop_api"}},
	})
}
