package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
	"github.com/urfave/cli/v2"
)

func commands(e *env) []*cli.Command {
	return []*cli.Command{
		{
			Name:   "status",
			Usage:  "show the active colour, each slot's port, pid, health and release, and recent history",
			Action: e.status,
		},
		{
			Name:      "start",
			Usage:     "start a slot and wait until it is healthy (the active colour also gets traffic)",
			ArgsUsage: "<blue|green>",
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				color, err := colorArg(c)
				if err != nil {
					return nil, err
				}
				return o.Start(c.Context, color, "")
			}),
		},
		{
			Name:      "stop",
			Usage:     "stop a slot (refuses the active one unless --force)",
			ArgsUsage: "<blue|green>",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "stop even the active slot"}},
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				color, err := colorArg(c)
				if err != nil {
					return nil, err
				}
				return o.Stop(c.Context, color, c.Bool("force"))
			}),
		},
		{
			Name:  "deploy",
			Usage: "start the idle slot with a release, health-check it, flip traffic to it, keep the old one for rollback",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "release", Aliases: []string{"r"}, Usage: "release name passed to the command as {{.Release}} (default: a timestamp)"},
				&cli.BoolFlag{Name: "no-switch", Usage: "start and health-check only; leave traffic where it is"},
			},
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				if c.NArg() > 0 {
					return nil, usagef("deploy takes no arguments (got %q); use --release", c.Args().First())
				}
				return o.Deploy(c.Context, orchestrator.DeployOptions{Release: c.String("release"), NoSwitch: c.Bool("no-switch")})
			}),
		},
		{
			Name:      "switch",
			Usage:     "flip traffic to a colour (refuses an unhealthy one unless --force)",
			ArgsUsage: "<blue|green>",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "switch even to an unhealthy slot"}},
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				color, err := colorArg(c)
				if err != nil {
					return nil, err
				}
				return o.Switch(c.Context, color, c.Bool("force"))
			}),
		},
		{
			Name:  "rollback",
			Usage: "flip traffic back to the previous colour (instant: it is still running)",
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Rollback(c.Context)
			}),
		},
		{
			Name:  "health-check",
			Usage: "probe both slots of every selected service and record the results; exit 1 when an active slot is unhealthy",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "watch", Usage: "repeat every health.interval until interrupted"},
			},
			Action: e.healthCheck,
		},
		{
			Name:   "proxy",
			Usage:  "run the builtin proxy in the foreground (for systemd); it follows the state file",
			Action: e.proxy,
		},
		{
			Name:   "reconcile",
			Usage:  "rebuild the state from what really runs and what the load balancer really routes to",
			Action: e.reconcile,
		},
		{
			Name:   "history",
			Usage:  "show the deployment history, newest last",
			Action: e.history,
		},
		{
			Name:      "logs",
			Usage:     "show the end of a slot's log",
			ArgsUsage: "<blue|green>",
			Flags:     []cli.Flag{&cli.IntFlag{Name: "lines", Aliases: []string{"n"}, Value: 50, Usage: "how many lines"}},
			Action:    e.logs,
		},
		{
			Name:   "render",
			Usage:  "print the load balancer configuration a flip to the active colour would apply",
			Action: e.render,
		},
		{
			Name:  "version",
			Usage: "print bgd's version",
			Action: func(c *cli.Context) error {
				return newPrinter(e, c).emit(map[string]string{"version": version}, "bgd "+version+"\n")
			},
		},
		demoAppCommand,
	}
}

func colorArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("%s needs one colour: blue or green", c.Command.Name)
	}
	color := c.Args().First()
	if !config.ValidColor(color) {
		return "", usagef("unknown colour %q: use blue or green", color)
	}
	return color, nil
}

// mutate wraps a workflow: config, orchestrator, run, print the result.
func (e *env) mutate(fn func(*cli.Context, *orchestrator.Orchestrator) (*orchestrator.Result, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		o, err := e.selected(c)
		if err != nil {
			return err
		}
		res, err := fn(c, o)
		out := newPrinter(e, c)
		out.endProgress()
		if err != nil {
			return err
		}
		return out.result(res)
	}
}

// selected loads the config and returns the orchestrator of the service
// chosen with --service (or the only one).
func (e *env) selected(c *cli.Context) (*orchestrator.Orchestrator, error) {
	cfg, err := e.loadConfig(c)
	if err != nil {
		return nil, err
	}
	return e.orchestrator(c, cfg, "")
}

func (e *env) status(c *cli.Context) error {
	o, err := e.selected(c)
	if err != nil {
		return err
	}
	st, err := o.Status(c.Context)
	if err != nil {
		return err
	}
	return newPrinter(e, c).status(st)
}

// healthCheck sweeps the selected service, or every service when none is
// selected and several are configured (the systemd timer's case).
func (e *env) healthCheck(c *cli.Context) error {
	cfg, err := e.loadConfig(c)
	if err != nil {
		return err
	}
	names := []string{c.String("service")}
	if names[0] == "" {
		names = cfg.ServiceNames()
	}
	var orchs []*orchestrator.Orchestrator
	for _, n := range names {
		o, err := e.orchestrator(c, cfg, n)
		if err != nil {
			return err
		}
		orchs = append(orchs, o)
	}
	out := newPrinter(e, c)
	for {
		sweeps, err := sweepAll(c, orchs)
		if perr := out.sweeps(sweeps); perr != nil {
			return perr
		}
		if !c.Bool("watch") {
			return err
		}
		if err != nil && !errors.Is(err, orchestrator.ErrNotHealthy) {
			return err
		}
		select {
		case <-c.Context.Done():
			return err
		case <-time.After(orchs[0].Service().Health.Interval.D()):
		}
	}
}

// sweepAll sweeps services concurrently (bounded) and joins their errors.
func sweepAll(c *cli.Context, orchs []*orchestrator.Orchestrator) ([]*orchestrator.Sweep, error) {
	sweeps := make([]*orchestrator.Sweep, len(orchs))
	errs := make([]error, len(orchs))
	sem := make(chan struct{}, 32)
	done := make(chan int)
	for i, o := range orchs {
		go func() {
			sem <- struct{}{}
			sweeps[i], errs[i] = o.HealthSweep(c.Context)
			<-sem
			done <- i
		}()
	}
	for range orchs {
		<-done
	}
	return sweeps, errors.Join(errs...)
}

func (e *env) proxy(c *cli.Context) error {
	cfg, err := e.loadConfig(c)
	if err != nil {
		return err
	}
	svc, err := cfg.Service(c.String("service"))
	if err != nil {
		return err
	}
	path := cfg.StatePath(svc.Name)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("proxy: state directory: %w", err)
	}
	p := &builtin.Proxy{Service: svc.Name, Listen: svc.LB.Builtin.Listen, StatePath: path,
		BluePort: svc.Blue.Port, GreenPort: svc.Green.Port, Logger: e.logger(c)}
	return p.Run(c.Context)
}

func (e *env) reconcile(c *cli.Context) error {
	o, err := e.selected(c)
	if err != nil {
		return err
	}
	rec, err := o.Reconcile(c.Context)
	if err != nil {
		return err
	}
	return newPrinter(e, c).reconciliation(rec)
}

func (e *env) history(c *cli.Context) error {
	o, err := e.selected(c)
	if err != nil {
		return err
	}
	st, err := (&state.Store{Path: o.StatePath()}).Load()
	if err != nil {
		return err
	}
	return newPrinter(e, c).history(st.History)
}

func (e *env) logs(c *cli.Context) error {
	color, err := colorArg(c)
	if err != nil {
		return err
	}
	cfg, err := e.loadConfig(c)
	if err != nil {
		return err
	}
	svc, err := cfg.Service(c.String("service"))
	if err != nil {
		return err
	}
	path := cfg.LogPath(svc.Name, color)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no log for %s: %w (has it ever been started?)", color, err)
	}
	tail := slots.LogTail(path, c.Int("lines"))
	return newPrinter(e, c).emit(map[string]string{"file": path, "lines": tail}, tail+"\n")
}

func (e *env) render(c *cli.Context) error {
	o, err := e.selected(c)
	if err != nil {
		return err
	}
	data, err := o.Render()
	if err != nil {
		return err
	}
	return newPrinter(e, c).emit(map[string]string{"driver": o.Service().LB.Driver, "config": string(data)}, string(data))
}
