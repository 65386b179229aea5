package integration

// The reliability suite (issue 6): bad input, corrupt state, crashes at
// every step of a deploy, two operators at once, faults of slots, of the
// load balancer and of the disk, fuzzing (in config/ and state/) and the
// security promises. Everything runs against the real bgd binary and real
// processes.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validState is a state file the bad-input cases must leave untouched.
const validState = `{
  "active_version": "green",
  "blue_port": 7101,
  "green_port": 7102,
  "blue_pid": 0,
  "green_pid": 0,
  "blue_healthy": false,
  "green_healthy": false,
  "last_switch": null,
  "last_check": null,
  "deployment_history": [],
  "generation": 3
}
`

// TestReliabilityBadInput: every bad input exits 2 with a message naming
// the culprit, and no file in the working directory changes (the state
// file is compared byte for byte, and no lock or log file appears).
func TestReliabilityBadInput(t *testing.T) {
	svc := func(body string) string { return "services:\n  app:\n" + body }
	ok := "    command: [\"x\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n"
	cases := []struct {
		name   string
		config string // bluegreen.yml in the directory; "" for none (embedded default)
		env    []string
		args   []string
		want   []string
	}{
		{"unknown key", svc(ok + "    colour: blue\n"), nil, []string{"status"}, []string{`unknown key "colour"`, "line 6", "bluegreen.yml"}},
		{"unknown nested key", svc(ok + "    lb:\n      drivr: nginx\n"), nil, []string{"deploy"}, []string{`unknown key "drivr"`, "line 7"}},
		{"wrong type port", svc("    command: [x]\n    blue: {port: five}\n    green: {port: 7102}\n"), nil, []string{"status"}, []string{"line 4", "five"}},
		{"wrong type command", svc("    command: {a: b}\n    blue: {port: 7101}\n    green: {port: 7102}\n"), nil, []string{"start", "blue"}, []string{"line 3"}},
		{"invalid duration", svc(ok + "    stop_grace: 10 seconds\n"), nil, []string{"stop", "blue"}, []string{"line 6", `invalid duration "10 seconds"`}},
		{"negative duration", svc(ok + "    health: {timeout: -5s}\n"), nil, []string{"deploy"}, []string{"line 6", `"-5s"`}},
		{"port out of range", svc("    command: [x]\n    blue: {port: 65536}\n    green: {port: 7102}\n"), nil, []string{"status"}, []string{"blue port 65536 is out of range"}},
		{"port zero", svc("    command: [x]\n    blue: {port: 7101}\n    green: {port: 0}\n"), nil, []string{"status"}, []string{"green port 0 is out of range"}},
		{"blue port equals green", svc("    command: [x]\n    blue: {port: 7101}\n    green: {port: 7101}\n"), nil, []string{"deploy"}, []string{"green port 7101 is already used by service \"app\" blue"}},
		{"ports collide across services", svc(ok) + "  web:\n    command: [x]\n    blue: {port: 7102}\n    green: {port: 7103}\n", nil, []string{"-s", "web", "status"}, []string{`service "web": blue port 7102 is already used by service "app" green`}},
		{"proxy on a slot port", svc(ok + "    lb: {builtin: {listen: \"127.0.0.1:7102\"}}\n"), nil, []string{"status"}, []string{"lb.builtin.listen port 7102"}},
		{"service name injects", "services:\n  \"app;}\":\n" + ok, nil, []string{"status"}, []string{`service name "app;}"`}},
		{"service name with space", "services:\n  \"my app\":\n" + ok, nil, []string{"status"}, []string{`service name "my app"`}},
		{"backend name injects", svc(ok + "    lb: {driver: haproxy, haproxy: {backends: {blue: \"b1 if TRUE\", green: g1}}}\n"), nil, []string{"status"}, []string{`lb.haproxy.backends.blue "b1 if TRUE"`}},
		{"backend name with newline", svc(ok + "    lb: {driver: haproxy, haproxy: {backends: {green: \"g\\nuse_backend x\"}}}\n"), nil, []string{"status"}, []string{`lb.haproxy.backends.green`}},
		{"empty command", svc("    command: []\n    blue: {port: 7101}\n    green: {port: 7102}\n"), nil, []string{"deploy"}, []string{`service "app": command is empty`}},
		{"unknown driver", svc(ok + "    lb: {driver: envoy}\n"), nil, []string{"status"}, []string{`lb.driver "envoy"`}},
		{"empty config file", " \n", nil, []string{"status"}, []string{"empty"}},
		{"missing --config", "", nil, []string{"--config", "nope.yml", "status"}, []string{"nope.yml"}},
		{"missing BG_CONFIG", "", []string{"BG_CONFIG=gone.yml"}, []string{"status"}, []string{"gone.yml"}},
		{"unknown colour start", svc(ok), nil, []string{"start", "purple"}, []string{`"purple"`}},
		{"unknown colour switch", svc(ok), nil, []string{"switch", "red"}, []string{`"red"`}},
		{"unknown colour stop", svc(ok), nil, []string{"stop", "Blue"}, []string{`"Blue"`}},
		{"unknown colour logs", svc(ok), nil, []string{"logs", "yellow"}, []string{`"yellow"`}},
		{"missing colour", svc(ok), nil, []string{"switch"}, []string{"blue or green"}},
		{"unknown command", svc(ok), nil, []string{"frobnicate"}, []string{`"frobnicate"`}},
		{"unknown flag", svc(ok), nil, []string{"deploy", "--relaese", "r1"}, []string{"relaese"}},
		{"bad --lock-timeout", svc(ok), nil, []string{"--lock-timeout", "soon", "deploy"}, []string{"soon"}},
		{"unknown service", svc(ok), nil, []string{"-s", "db", "status"}, []string{`unknown service "db"`}},
		{"BLUE_PORT=abc", "", []string{"BLUE_PORT=abc"}, []string{"status"}, []string{`BLUE_PORT="abc"`}},
		{"GREEN_PORT out of range", "", []string{"GREEN_PORT=99999"}, []string{"deploy"}, []string{"green port 99999 is out of range"}},
		{"BLUE_PORT equals GREEN_PORT", "", []string{"BLUE_PORT=7301", "GREEN_PORT=7301"}, []string{"start", "blue"}, []string{"green port 7301 is already used"}},
		{"BG_PROXY_PORT=x", "", []string{"BG_PROXY_PORT=x"}, []string{"deploy"}, []string{`BG_PROXY_PORT="x"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, ".local_context"), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, ".local_context", "bg_state.json"), []byte(validState), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "bluegreen.yml"), []byte(tc.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, dir)
			stdout, stderr, code := bgd(t, dir, tc.env, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not name %q:\n%s", w, stderr)
				}
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("the directory changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			// --json: the same refusal, machine-readable.
			stdout, _, code = bgd(t, dir, tc.env, append([]string{"--json"}, tc.args...)...)
			var res struct {
				OK       bool   `json:"ok"`
				Error    string `json:"error"`
				ExitCode int    `json:"exit_code"`
			}
			if code != 2 {
				t.Errorf("--json: exit %d, want 2", code)
			}
			if strings.Contains(tc.name, "unknown command") || strings.Contains(tc.name, "unknown flag") || strings.Contains(tc.name, "lock-timeout") {
				return // urfave/cli refuses these before bgd's own error handling
			}
			if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.OK || res.ExitCode != 2 || !strings.Contains(res.Error, tc.want[0]) {
				t.Errorf("--json output %q, want {ok: false, exit_code: 2, error naming %q}", stdout, tc.want[0])
			}
		})
	}
}
