package main

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/bgd-dev/bgd/internal/freeport"
)

// TestMain lets testscript run this test binary as the `bgd` command.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"bgd": func() { os.Exit(runMain()) },
	})
}

// TestScripts runs the CLI scenarios in testdata/script/*.txtar. Each script
// gets free ports in BLUE_PORT, GREEN_PORT and BG_PROXY_PORT (never the
// seed's 5004-5006), and every process it leaves behind is stopped.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			for _, name := range []string{"BLUE_PORT", "GREEN_PORT", "BG_PROXY_PORT", "OTHER_PORT", "OTHER_PORT_2", "OTHER_PORT_3"} {
				e.Setenv(name, strconv.Itoa(freePort(t)))
			}
			e.Setenv("NO_COLOR", "1")
			work := e.WorkDir
			e.Defer(func() {
				// bg_state.json, or <service>.json with several services.
				states, _ := filepath.Glob(filepath.Join(work, ".local_context", "*.json"))
				for _, st := range states {
					killRecorded(st)
				}
			})
			return nil
		},
		// [systemd]: systemd is PID 1 here (sd_booted), so the systemd
		// runner works.
		Condition: func(cond string) (bool, error) {
			if cond != "systemd" {
				return false, errors.New("unknown condition " + cond)
			}
			fi, err := os.Stat("/run/systemd/system")
			return err == nil && fi.IsDir(), nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitport": cmdWaitPort,
			"exitcode": cmdExitCode,
			"jsonok":   cmdJSONOK,
			"expand":   cmdExpand,
			"killpid":  cmdKillPID,
		},
	})
}

// cmdKillPID SIGKILLs the process (and its group) whose pid the state file
// records under KEY, as a crash or a reboot would end it: `killpid
// .local_context/bg_state.json green_pid`.
func cmdKillPID(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: killpid STATEFILE KEY")
	}
	var st map[string]any
	ts.Check(json.Unmarshal([]byte(ts.ReadFile(args[0])), &st))
	pid, _ := st[args[1]].(float64)
	if pid <= 0 {
		ts.Fatalf("%s records no %s", args[0], args[1])
	}
	syscall.Kill(-int(pid), syscall.SIGKILL)
	syscall.Kill(int(pid), syscall.SIGKILL)
	for i := 0; i < 500 && syscall.Kill(int(pid), 0) == nil; i++ {
		time.Sleep(10 * time.Millisecond) // a child of another process: wait until it is reaped
	}
}

// killRecorded stops the slots and proxy a script's state file names.
func killRecorded(statePath string) {
	data, err := os.ReadFile(statePath)
	if err != nil {
		return
	}
	var st struct {
		BluePID  int `json:"blue_pid"`
		GreenPID int `json:"green_pid"`
		ProxyPID int `json:"proxy_pid"`
	}
	if json.Unmarshal(data, &st) != nil {
		return
	}
	for _, pid := range []int{st.BluePID, st.GreenPID, st.ProxyPID} {
		if pid > 0 {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// cmdWaitPort waits up to 5 s until something listens on the port:
// `waitport PORT`, or `! waitport PORT` to wait until nothing does.
func cmdWaitPort(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitport PORT")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+args[0], 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		if (err == nil) != neg {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("port %s: listening=%v after 5s", args[0], err == nil)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdExitCode runs a command like exec and checks its exit code:
// `exitcode 2 bgd rollback blue`. Its stdout and stderr are kept for the
// stdout and stderr commands that follow.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode CODE COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exitcode: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

// cmdJSONOK checks that stdout is exactly one JSON object with "ok": true
// (`! jsonok`: "ok": false) and that each KEY named is a list, never null:
// `jsonok deployment_history`.
func cmdJSONOK(ts *testscript.TestScript, neg bool, keys []string) {
	dec := json.NewDecoder(strings.NewReader(ts.ReadFile("stdout")))
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		ts.Fatalf("stdout is not a JSON object: %v", err)
	}
	if dec.More() {
		ts.Fatalf("stdout holds more than one JSON value")
	}
	if ok, isBool := obj["ok"].(bool); !isBool || ok == neg {
		ts.Fatalf(`"ok" is %v, want %v`, obj["ok"], !neg)
	}
	for _, k := range keys {
		if _, isList := obj[k].([]any); !isList {
			ts.Fatalf("%q is %v, want a list", k, obj[k])
		}
	}
}

// cmdExpand writes SRC to DST with $VARS replaced by the script's
// environment: `expand two.yml.in two.yml`.
func cmdExpand(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: expand SRC DST")
	}
	text := os.Expand(ts.ReadFile(args[0]), ts.Getenv)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(text), 0o644))
}

// freePort returns a free loopback port from this package's range (see
// internal/freeport), never the same one twice.
func freePort(t *testing.T) int {
	p, err := freeport.Pick(28000, 30000)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
