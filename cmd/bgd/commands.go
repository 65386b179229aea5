package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/urfave/cli/v2"
)

func commands(e *env) []*cli.Command {
	// The commands' flags, bound with Destination.
	var (
		startRelease       string
		stopForce          bool
		deploy             orchestrator.DeployOptions
		switchForce, watch bool
		lines              int
	)
	return []*cli.Command{
		{
			Name:        "status",
			Usage:       "show the active colour, each slot's port, pid, health and release, and recent history",
			Description: "Example: bgd status --json",
			Before:      noArgs,
			Action:      e.status,
		},
		{
			Name:        "start",
			Usage:       "start a slot and wait until it is healthy (the active colour also gets traffic)",
			ArgsUsage:   "<blue|green>",
			Description: "Example: bgd start blue --release v1",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "release", Aliases: []string{"r"}, Destination: &startRelease, Usage: "release to start, passed to the command as {{.Release}} (default: the one the slot last ran)"},
			},
			Before: checks(oneColor, releaseFlag(&startRelease)),
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Start(c.Context, colorArg(c), startRelease)
			}),
		},
		{
			Name:        "stop",
			Usage:       "stop a slot (refuses the active one unless --force)",
			ArgsUsage:   "<blue|green>",
			Description: "A standby that served traffic until the last flip is drained first: bgd waits until the\nload balancer has nothing in flight to it, at most drain_timeout (default 30s).\n\nExample: bgd stop green",
			Flags:       []cli.Flag{&cli.BoolFlag{Name: "force", Destination: &stopForce, Usage: "stop even the active slot"}},
			Before:      oneColor,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Stop(c.Context, colorArg(c), stopForce)
			}),
		},
		{
			Name:        "deploy",
			Usage:       "start the idle slot with a release, health-check it, flip traffic to it, keep the old one for rollback",
			Description: "With --watch (or analysis.window) the deploy stays attached after the flip and rolls back by itself\nwhen the new slot crosses a threshold of analysis: (exit 1, history status auto_rolled_back).\n\nExamples:\n   bgd deploy --release v2\n   bgd deploy --release v2 --watch 60s\n   bgd deploy --release v2 --canary 10",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "release", Aliases: []string{"r"}, Destination: &deploy.Release, Usage: "release name passed to the command as {{.Release}} (default: a timestamp)"},
				&cli.BoolFlag{Name: "no-switch", Destination: &deploy.NoSwitch, Usage: "start and health-check only; leave traffic where it is"},
				&cli.BoolFlag{Name: "force", Destination: &deploy.Force, Usage: "redeploy even when the release is already active and healthy"},
				&cli.IntFlag{Name: "canary", Destination: &deploy.Canary, Usage: "make the new slot a canary getting this percentage (1-99) of new requests, instead of flipping"},
				&cli.IntSliceFlag{Name: "steps", Usage: "canary weights one after the other, e.g. 10,50,100 (100 promotes); the command stays attached"},
				&cli.DurationFlag{Name: "step-interval", Destination: &deploy.StepInterval, Usage: "how long each canary step is watched (analysis: thresholds, health) before the next, e.g. 60s"},
				&cli.DurationFlag{Name: "watch", Destination: &deploy.Watch, Usage: "after the flip, watch the new slot through the load balancer this long (analysis: thresholds) and roll back by itself when it fails (default: analysis.window)"},
			},
			Before: checks(noArgs, releaseFlag(&deploy.Release)),
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				deploy.Steps = c.IntSlice("steps")
				return o.Deploy(c.Context, deploy)
			}),
		},
		{
			Name:      "canary",
			Usage:     "send a percentage (1-99) of new requests to the standby slot, the canary; the rest stay on the active one",
			ArgsUsage: "<weight>",
			Description: "The standby must run and be healthy (bgd deploy --canary or --no-switch started it).\n" +
				"With canary.sticky: true each client keeps the side that first answered it (cookie bgd_<service>).\n\n" +
				"Examples:\n   bgd deploy --release v2 --canary 10\n   bgd canary 50\n   bgd promote        (or: bgd abort)",
			Before: weightArg,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				w, _ := strconv.Atoi(c.Args().First())
				return o.Canary(c.Context, w)
			}),
		},
		{
			Name:      "shadow",
			Usage:     "on: copy each request to the standby slot and discard its answers; off: stop the copies",
			ArgsUsage: "<on|off>",
			Description: "The standby must run and be healthy to turn it on; flips keep the setting (the copies go to the new standby).\n" +
				"The clients are answered by the active slot alone. bgd status shows what became of the copies (builtin proxy).\n" +
				"HAProxy cannot copy requests: shadow on is refused (exit 2).\n\n" +
				"Examples:\n   bgd deploy --release v2 --no-switch\n   bgd shadow on\n   bgd status\n   bgd shadow off",
			Before: onOffArg,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Shadow(c.Context, c.Args().First() == "on")
			}),
		},
		{
			Name:        "promote",
			Usage:       "finish a canary: all new requests go to it; the old slot keeps running for rollback",
			Description: "Example: bgd promote",
			Before:      noArgs,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Promote(c.Context)
			}),
		},
		{
			Name:        "abort",
			Usage:       "end a canary: all new requests go back to the active slot, then the canary is drained and stopped",
			Description: "Example: bgd abort",
			Before:      noArgs,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Abort(c.Context)
			}),
		},
		{
			Name:        "switch",
			Usage:       "flip traffic to a colour (refuses an unhealthy one unless --force)",
			ArgsUsage:   "<blue|green>",
			Description: "Example: bgd switch green",
			Flags:       []cli.Flag{&cli.BoolFlag{Name: "force", Destination: &switchForce, Usage: "switch even to an unhealthy slot"}},
			Before:      oneColor,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Switch(c.Context, colorArg(c), switchForce)
			}),
		},
		{
			Name:        "rollback",
			Usage:       "flip traffic back to the previous colour (instant: it is still running)",
			Description: "Example: bgd rollback",
			Before:      noArgs,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Rollback(c.Context)
			}),
		},
		{
			Name:        "health-check",
			Usage:       "probe both slots of every selected service and record the results; exit 1 when an active slot is unhealthy",
			Description: "Examples:\n   bgd health-check --json           every service, one JSON object\n   bgd -s web health-check --watch   one service, until interrupted",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "watch", Destination: &watch, Usage: "repeat every health.interval until interrupted"},
			},
			Before: noArgs,
			Action: func(c *cli.Context) error { return e.healthCheck(c, watch) },
		},
		{
			Name:        "up",
			Usage:       "bring every selected service to its recorded state: active slot, standby if it ran, proxy, routing (at boot, from a timer)",
			Description: "Examples:\n   bgd up --json        every service, one JSON object\n   bgd -s web up        one service",
			Before:      noArgs,
			Action:      e.up,
		},
		{
			Name:        "proxy",
			Usage:       "run the builtin proxy in the foreground (for systemd); it follows the state file",
			Description: proxyDescription,
			Before:      noArgs,
			Action:      e.proxy,
		},
		{
			Name:        "agent",
			Usage:       "apply the service's routing from etcd to this host's load balancer, in the foreground (state.backend: etcd; for systemd)",
			Description: agentDescription,
			Before:      noArgs,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "host", Usage: "this host's name in etcd and in messages (default: the host name)"},
			},
			Action: e.agent,
		},
		{
			Name:        "import-state",
			Usage:       "copy a state file into etcd (state.backend: etcd), history included, when etcd holds none for the service",
			Description: "How a service that ran with a state file moves to etcd: its active colour, releases and history come along.\nExample: bgd import-state --from .local_context/bg_state.json",
			Before:      noArgs,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "from", Usage: "the state file (default: the one the config names)"},
			},
			Action: e.importState,
		},
		{
			Name:        "reconcile",
			Usage:       "rebuild the state from what really runs and what the load balancer really routes to",
			Description: "Example: bgd reconcile",
			Before:      noArgs,
			Action:      e.reconcile,
		},
		{
			Name:        "history",
			Usage:       "show the deployment history, newest last",
			Description: "Example: bgd history --json",
			Before:      noArgs,
			Action:      e.history,
		},
		{
			Name:        "logs",
			Usage:       "show the end of a slot's log",
			ArgsUsage:   "<blue|green>",
			Description: "Example: bgd logs green -n 200",
			Flags:       []cli.Flag{&cli.IntFlag{Name: "lines", Aliases: []string{"n"}, Value: 50, Destination: &lines, Usage: "how many lines (at least 1)"}},
			Before:      checks(oneColor, linesFlag(&lines)),
			Action:      func(c *cli.Context) error { return e.logs(c, lines) },
		},
		{
			Name:        "render",
			Usage:       "print the load balancer configuration a flip to the active colour would apply",
			Description: "Example: bgd --config bluegreen.yml render",
			Before:      noArgs,
			Action:      e.render,
		},
		{
			Name:        "version",
			Usage:       "print bgd's version (as bgd --version)",
			Description: "Example: bgd version --json",
			Before:      noArgs,
			Action: func(c *cli.Context) error {
				return newPrinter(e).version()
			},
		},
		dashboardCommand(e),
		demoAppCommand(),
	}
}

// The argument checks run as a command's Before: after --help is handled,
// before the config is loaded or anything is done.

// noArgs is the check of every command that takes no arguments.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("%s takes no arguments (got %q): see `bgd %s --help`", c.Command.Name, c.Args().First(), c.Command.Name)
	}
	return nil
}

// oneColor is the check of the commands that act on one slot.
func oneColor(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("%s needs one colour: blue or green", c.Command.Name)
	}
	if color := colorArg(c); !color.Valid() {
		return usagef("unknown colour %q: use blue or green", color)
	}
	return nil
}

// onOffArg is the check of `bgd shadow on|off`.
func onOffArg(c *cli.Context) error {
	if c.NArg() != 1 || (c.Args().First() != "on" && c.Args().First() != "off") {
		return usagef("%s needs one argument: on or off", c.Command.Name)
	}
	return nil
}

// weightArg is the check of `bgd canary <weight>`.
func weightArg(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("canary needs one weight: the percentage of new requests for the canary, 1-99")
	}
	w, err := strconv.Atoi(c.Args().First())
	if err != nil {
		return usagef("canary weight %q is not a whole percentage (1-99)", c.Args().First())
	}
	return orchestrator.CheckWeight(w)
}

// colorArg is the colour argument of a command that acts on one slot
// (oneColor has checked it).
func colorArg(c *cli.Context) config.Color { return config.Color(c.Args().First()) }

// releaseFlag checks a --release given on the command line (even an empty
// one: "" is refused, not read as the default) with config.CheckRelease;
// the flag is bound to release.
func releaseFlag(release *string) cli.BeforeFunc {
	return func(c *cli.Context) error {
		if !c.IsSet("release") {
			return nil
		}
		if err := config.CheckRelease(*release); err != nil {
			// Not "invalid configuration": the bad value is on the command line.
			return usagef("bad --release: %s", strings.TrimPrefix(err.Error(), config.ErrInvalid.Error()+": "))
		}
		return nil
	}
}

// linesFlag checks logs --lines, bound to lines.
func linesFlag(lines *int) cli.BeforeFunc {
	return func(*cli.Context) error {
		if *lines < 1 {
			return usagef("--lines must be at least 1 (got %d)", *lines)
		}
		return nil
	}
}

// checks runs argument checks in order.
func checks(fns ...cli.BeforeFunc) cli.BeforeFunc {
	return func(c *cli.Context) error {
		for _, fn := range fns {
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	}
}

// mutate wraps a workflow: config, orchestrator, run, print the result.
func (e *env) mutate(fn func(*cli.Context, *orchestrator.Orchestrator) (*orchestrator.Result, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		o, err := e.selected(c)
		if err != nil {
			return err
		}
		res, err := fn(c, o)
		e.writeMetrics(o)
		out := newPrinter(e)
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
	cfg, err := e.loadConfig()
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
	return newPrinter(e).status(st)
}

// selectedAll returns the orchestrator of the selected service, or of every
// service when none is selected.
func (e *env) selectedAll(c *cli.Context) ([]*orchestrator.Orchestrator, error) {
	cfg, err := e.loadConfig()
	if err != nil {
		return nil, err
	}
	names := []string{e.opts.service}
	if names[0] == "" {
		names = cfg.ServiceNames()
	}
	var orchs []*orchestrator.Orchestrator
	for _, n := range names {
		o, err := e.orchestrator(c, cfg, n)
		if err != nil {
			return nil, err
		}
		orchs = append(orchs, o)
	}
	return orchs, nil
}

// up converges the selected service, or every service in turn.
func (e *env) up(c *cli.Context) error {
	orchs, err := e.selectedAll(c)
	if err != nil {
		return err
	}
	var results []*orchestrator.UpResult
	var errs []error
	for _, o := range orchs {
		res, err := o.Up(c.Context)
		if err != nil {
			err = fmt.Errorf("%s: %w", o.Service().Name, err)
		}
		results, errs = append(results, res), append(errs, err)
	}
	e.writeMetrics(orchs...)
	out := newPrinter(e)
	out.endProgress()
	err = errors.Join(errs...)
	if perr := out.ups(results, err); perr != nil {
		return perr
	}
	return err
}

// healthCheck sweeps the selected service, or every service when none is
// selected and several are configured (the systemd timer's case).
func (e *env) healthCheck(c *cli.Context, watch bool) error {
	orchs, err := e.selectedAll(c)
	if err != nil {
		return err
	}
	out := newPrinter(e)
	if watch {
		return orchestrator.WatchHealth(c.Context, orchs, func(sw []*orchestrator.Sweep, err error) error {
			e.writeMetrics(orchs...)
			return out.sweeps(sw, err)
		})
	}
	sweeps, err := orchestrator.HealthSweepAll(c.Context, orchs)
	e.writeMetrics(orchs...)
	if perr := out.sweeps(sweeps, err); perr != nil {
		return perr
	}
	return err
}

const proxyDescription = "It serves the service on lb.builtin.listen and its /metrics, /monitoring and /_bgd/route on lb.builtin.admin_listen\n" +
	"(default: the unix socket <state dir>/<service>.admin.sock; without a config file, the listen itself).\n" +
	"Example: bgd --config /etc/bgd/bluegreen.yml -s web proxy"

func (e *env) proxy(c *cli.Context) error {
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	return orchestrator.RunProxy(c.Context, cfg, e.opts.service, e.logger())
}

const agentDescription = "On each load-balancer host: it watches the service's state in etcd, applies its routing to the load balancer of lb.driver\n" +
	"(with the driver's own confirmation) and reports what it serves under <prefix>/<service>/agents/<host>. Without etcd it keeps\n" +
	"the routing it last applied. SIGTERM: it leaves (commands stop waiting for it) and exits 0.\n" +
	"Example: bgd --config /etc/bgd/bluegreen.yml -s web agent --host lb1"

func (e *env) agent(c *cli.Context) error {
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	svc, err := cfg.Service(e.opts.service)
	if err != nil {
		return err
	}
	o, err := orchestrator.New(cfg, svc.Name, orchestrator.Options{
		LocalBalancer: true,
		Logger:        e.logger(),
		SpawnProxy:    func() (int, error) { return orchestrator.SpawnProxy(cfg, svc.Name, selfPath()) },
	})
	if err != nil {
		return err
	}
	defer o.Close()
	return o.RunAgent(c.Context, c.String("host"))
}

func (e *env) importState(c *cli.Context) error {
	o, err := e.selected(c)
	if err != nil {
		return err
	}
	defer o.Close()
	st, err := o.ImportState(c.Context, c.String("from"))
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("imported the state of %s into etcd: %s active, generation %d, %d history entries", o.Service().Name, st.ActiveVersion, st.Generation, len(st.History))
	return newPrinter(e).emit(map[string]any{"ok": true, "service": o.Service().Name, "active_version": st.ActiveVersion,
		"generation": st.Generation, "history": len(st.History)}, msg+"\n")
}

func (e *env) reconcile(c *cli.Context) error {
	o, err := e.selected(c)
	if err != nil {
		return err
	}
	rec, err := o.Reconcile(c.Context)
	e.writeMetrics(o)
	if err != nil {
		return err
	}
	return newPrinter(e).reconciliation(rec)
}

func (e *env) history(c *cli.Context) error {
	o, err := e.selected(c)
	if err != nil {
		return err
	}
	h, err := o.History()
	if err != nil {
		return err
	}
	return newPrinter(e).history(o.Service().Name, h)
}

func (e *env) logs(c *cli.Context, lines int) error {
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	path, tail, err := orchestrator.SlotLog(cfg, e.opts.service, colorArg(c), lines)
	if err != nil {
		return err
	}
	return newPrinter(e).emit(map[string]any{"ok": true, "file": path, "lines": tail}, tail+"\n")
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
	return newPrinter(e).emit(map[string]any{"ok": true, "driver": o.Service().LB.Driver, "config": string(data)}, string(data))
}
