package main

import (
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
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
			for _, name := range []string{"BLUE_PORT", "GREEN_PORT", "BG_PROXY_PORT", "OTHER_PORT"} {
				e.Setenv(name, strconv.Itoa(freePort(t)))
			}
			e.Setenv("NO_COLOR", "1")
			work := e.WorkDir
			e.Defer(func() { killRecorded(filepath.Join(work, ".local_context", "bg_state.json")) })
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitport": cmdWaitPort,
		},
	})
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

// freePort returns a port that was free a moment ago, at random in
// 28000-29999 and never the same one twice here: below Linux's ephemeral
// range, apart from the ranges of the integration tests (20000-27999) and
// the orchestrator example (30000-31999) that run at the same time, far
// from the seed's 5004-5006. Scripts run in parallel and pick ports before
// they bind them, hence the set of ports already given.
func freePort(t *testing.T) int {
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 1000; i++ {
		p := 28000 + rand.IntN(2000)
		if portsGiven[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatal("no free port found in 28000-29999")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)
