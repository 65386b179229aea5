package main

import (
	"github.com/bgd-dev/bgd/demoapp"
	"github.com/urfave/cli/v2"
)

// demoAppCommand is made anew for every run, like the other commands
// (urfave/cli changes a command as it runs it).
func demoAppCommand() *cli.Command {
	var o demoapp.Options
	return &cli.Command{
		Name:   "demo-app",
		Usage:  "serve the demo app (the embedded default's slot)",
		Hidden: true,
		Before: checks(noArgs, func(c *cli.Context) error {
			if !c.IsSet("port") {
				return usagef("demo-app needs --port")
			}
			return nil
		}),
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Destination: &o.Port},
			&cli.StringFlag{Name: "host", Destination: &o.Host, EnvVars: []string{"DEMO_HOST"}, Value: "127.0.0.1",
				Usage: "the address to listen on (0.0.0.0: every address, for load balancers on other hosts)"},
			&cli.StringFlag{Name: "color", Destination: &o.Color},
			&cli.StringFlag{Name: "release", Destination: &o.Release},
			&cli.DurationFlag{Name: "ready-after", Destination: &o.ReadyAfter, Usage: "answer 503 on /health until this long after start"},
			&cli.DurationFlag{Name: "fail-after", Destination: &o.FailAfter, Usage: "answer 503 on /health from this long after start"},
			&cli.DurationFlag{Name: "delay", Destination: &o.Delay, Usage: "hold every / request this long (one request: /?delay=2s)"},
			&cli.BoolFlag{Name: "hard-stop", Destination: &o.HardStop, Usage: "on SIGTERM close every connection at once, in-flight requests included"},
			&cli.Float64Flag{Name: "error-rate", Destination: &o.ErrorRate, EnvVars: []string{"DEMO_ERROR_RATE"},
				Usage: "answer 500 to this fraction (0-1, exact: 0.1 is every 10th) of requests to paths other than /health, from --bad-after on"},
			&cli.DurationFlag{Name: "latency", Destination: &o.Latency, EnvVars: []string{"DEMO_LATENCY"},
				Usage: "add this to every answer to paths other than /health, from --bad-after on"},
			&cli.DurationFlag{Name: "bad-after", Destination: &o.BadAfter, EnvVars: []string{"DEMO_BAD_AFTER"},
				Usage: "start --error-rate and --latency this long after start (0: at once); /health stays healthy"},
		},
		Action: func(c *cli.Context) error { return demoapp.Run(c.Context, o) },
	}
}
