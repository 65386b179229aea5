package orchestrator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/demoapp"
	"github.com/bgd-dev/bgd/internal/freeport"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/orchestrator"
)

// TestMain makes this test binary the embedded default's slot: run as
// "<binary> demo-app --port N --color C --release R", it serves the demo app.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "demo-app" {
		var o demoapp.Options
		for i := 2; i+1 < len(os.Args); i += 2 {
			switch os.Args[i] {
			case "--port":
				o.Port, _ = strconv.Atoi(os.Args[i+1])
			case "--color":
				o.Color = os.Args[i+1]
			case "--release":
				o.Release = os.Args[i+1]
			}
		}
		ctx, stop := signalContext()
		defer stop()
		if err := demoapp.Run(ctx, o); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The library API: the seed's Python BlueGreenManager, in Go. This runs the
// embedded default configuration (the demo app) with its builtin proxy
// inside this process.
func Example() {
	dir, _ := os.MkdirTemp("", "bgd-example-")
	defer os.RemoveAll(dir)
	env := map[string]string{
		"BLUE_PORT": freePort(), "GREEN_PORT": freePort(), "BG_PROXY_PORT": freePort(),
		"BG_STATE_FILE": filepath.Join(dir, "bg_state.json"),
	}
	cfg, err := config.Load(config.Source{Getenv: func(k string) string { return env[k] }, Self: os.Args[0]})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := cfg.Services["app"]
	proxy := &builtin.Proxy{Service: svc.Name, Listen: svc.LB.Builtin.Listen, StatePath: cfg.StatePath(svc.Name),
		BluePort: svc.Blue.Port, GreenPort: svc.Green.Port}
	o, err := orchestrator.New(cfg, "app", orchestrator.Options{
		// The CLI starts a detached `bgd proxy`; here it runs in this process.
		SpawnProxy: func() (int, error) { go proxy.Run(ctx); return os.Getpid(), nil },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer o.Stop(ctx, "blue", true)
	defer o.Stop(ctx, "green", true)

	if _, err := o.Start(ctx, "blue", ""); err != nil {
		fmt.Println(err)
		return
	}
	res, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"})
	if err != nil {
		fmt.Println("deploy failed:", err)
		return
	}
	fmt.Println(res.Message)
	st, _ := o.Status(ctx)
	fmt.Printf("active: %s, load balancer routes to %s\n", st.ActiveVersion, st.LBActive)
	res, _ = o.Rollback(ctx)
	fmt.Println(res.Message)
	// Output:
	// release v2 is live on green; blue keeps running for rollback
	// active: green, load balancer routes to green
	// rolled back from green to blue
}

// freePort returns a free loopback port from this example's range (see
// internal/freeport).
func freePort() string {
	p, err := freeport.Pick(30000, 32000)
	if err != nil {
		panic(err)
	}
	return strconv.Itoa(p)
}
