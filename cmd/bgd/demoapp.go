package main

import (
	"github.com/bgd-dev/bgd/demoapp"
	"github.com/urfave/cli/v2"
)

// demoAppCommand is made anew for every run, like the other commands
// (urfave/cli changes a command as it runs it).
func demoAppCommand() *cli.Command {
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
			&cli.IntFlag{Name: "port"},
			&cli.StringFlag{Name: "color"},
			&cli.StringFlag{Name: "release"},
			&cli.DurationFlag{Name: "ready-after", Usage: "answer 503 on /health until this long after start"},
			&cli.DurationFlag{Name: "fail-after", Usage: "answer 503 on /health from this long after start"},
			&cli.DurationFlag{Name: "delay", Usage: "hold every / request this long"},
		},
		Action: func(c *cli.Context) error {
			return demoapp.Run(c.Context, demoapp.Options{
				Port: c.Int("port"), Color: c.String("color"), Release: c.String("release"),
				ReadyAfter: c.Duration("ready-after"), FailAfter: c.Duration("fail-after"), Delay: c.Duration("delay"),
			})
		},
	}
}
