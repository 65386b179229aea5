package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/state"
	"github.com/urfave/cli/v2"
)

// Exit codes, the contract with scripts and Ansible.
const (
	exitOK     = 0 // done
	exitFailed = 1 // the operation failed: unhealthy, deploy failed, rollback impossible
	exitUsage  = 2 // bad usage or bad config
	exitLocked = 3 // another bgd operation holds the lock
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError is an error with the exit code bgd ends with. usagef makes
// those of bad usage the CLI finds itself; run turns whatever error a
// command returns into one (asExit), once, and exits with its code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Is makes a usage error match errUsage.
func (e *exitError) Is(target error) bool { return target == errUsage && e.code == exitUsage }

// errUsage matches the usage errors of the CLI itself (usagef).
var errUsage = errors.New("bad usage")

// usagef formats a usage error (exit 2) that reads as its message.
func usagef(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

// sentinelCodes are the exit codes of the errors of the packages bgd calls,
// in order of precedence: an error that matches several (a join of several
// services' errors) gets the first one's code.
var sentinelCodes = []struct {
	err  error
	code int
}{
	{state.ErrLocked, exitLocked},
	{config.ErrInvalid, exitUsage},
	{orchestrator.ErrUsage, exitUsage},
	{state.ErrUnusable, exitUsage}, // a state path that is a directory, a FIFO...
	{lb.ErrUnsupported, exitUsage}, // a route the driver cannot apply (a weight, maintenance...)
	{lb.ErrInvalidRoute, exitUsage},
}

// exitCode maps an error to the exit code contract: an *exitError's own
// code, else that of the first sentinel it matches, else exitFailed (an
// operation that failed, orchestrator.ErrFailed or ErrNotHealthy among
// them).
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	for _, s := range sentinelCodes {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return exitFailed
}

// asExit is the *exitError a run that returned err exits with. An error
// before any command ran (a flag, an unknown command) is a usage error, and
// so are urfave's own errors (cli.ExitCoder: missing flags, bad values)
// that exitCode does not know.
func asExit(err error, actionRan bool) *exitError {
	code := exitCode(err)
	var ce cli.ExitCoder
	if !actionRan || (code == exitFailed && errors.As(err, &ce)) {
		code = exitUsage
	}
	return &exitError{code, err}
}

// env is what a run sees of the process it runs in; tests replace it.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	opts           options  // the global flags, bound by opts.flags()
	out            *printer // made by newPrinter on first use
	// textfileDir is the loaded config's metrics.textfile_dir ("": none).
	textfileDir string
}

// options are the global flags of a run.
type options struct {
	config      string
	service     string
	json        bool
	stateFile   string
	lockTimeout time.Duration
	verbose     bool
	// waitAgents and agentsTimeout: the etcd backend's wait for the
	// load-balancer hosts' agents after a change of routing.
	waitAgents    bool
	agentsTimeout time.Duration
}

// flags are the global flags, bound to o.
func (o *options) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Destination: &o.config, Usage: "config file (default: $BG_CONFIG, else ./bluegreen.yml, else the embedded demo)"},
		&cli.StringFlag{Name: "service", Aliases: []string{"s"}, Destination: &o.service, Usage: "service to act on (default: the only one)"},
		&cli.BoolFlag{Name: "json", Destination: &o.json, Usage: "machine output on stdout; logs stay on stderr"},
		&cli.StringFlag{Name: "state-file", Destination: &o.stateFile, Usage: "state file when a single service is configured (default: $BG_STATE_FILE, else <state_dir>/bg_state.json)"},
		&cli.DurationFlag{Name: "lock-timeout", Destination: &o.lockTimeout, Usage: "wait this long for another operation's lock before exiting 3 (0: fail at once)"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Destination: &o.verbose, Usage: "log each step on stderr"},
		&cli.BoolFlag{Name: "wait-agents", Value: true, Destination: &o.waitAgents,
			Usage: "with state.backend etcd: after a change of routing, wait until every load-balancer host's agent applied it (--wait-agents=false: do not)"},
		&cli.DurationFlag{Name: "agents-timeout", Destination: &o.agentsTimeout, Usage: "with state.backend etcd: how long to wait for the agents (default: state.agents_timeout)"},
	}
}

func init() {
	// urfave's default version flag is `--version, -v`, but -v is --verbose.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
	cli.VersionPrinter = func(c *cli.Context) {
		e := &env{stdout: c.App.Writer, stderr: c.App.ErrWriter, getenv: os.Getenv, opts: options{json: c.Bool("json")}}
		newPrinter(e).version()
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	actionRan := false
	var unknown error // an unknown command (or help topic)
	cmds := append(commands(e), pauseCommands(e)...)
	for _, cmd := range cmds {
		action := cmd.Action
		cmd.Action = func(c *cli.Context) error { actionRan = true; return action(c) }
		// A flag error is returned and printed once below, not with urfave's
		// "Incorrect Usage" and the whole help text before it.
		cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error { return usagef("%v", err) }
		cmd.HideHelpCommand = true // `bgd help start` and `bgd start --help`, not `bgd start help`
		cmd.CustomHelpTemplate = cli.CommandHelpTemplate + globalsNote + helpFooter
	}
	app := &cli.App{
		Name:                  "bgd",
		Usage:                 "blue-green deployments from the load-balancer host",
		Version:               version,
		Description:           appDescription,
		CustomAppHelpTemplate: cli.AppHelpTemplate + helpFooter,
		Writer:                stdout,
		ErrWriter:             stderr,
		EnableBashCompletion:  false,
		Flags:                 e.opts.flags(),
		Commands:              cmds,
		CommandNotFound: func(c *cli.Context, name string) {
			unknown = usagef("unknown command %q: see `bgd --help`", name)
		},
		OnUsageError: func(c *cli.Context, err error, isSubcommand bool) error {
			return usagef("%v", err)
		},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	args, err := flagsFirst(args, app)
	if err == nil {
		err = app.RunContext(ctx, args)
	}
	if err == nil {
		err = unknown
	}
	if err == nil {
		if !actionRan && !helpOrVersion(args) {
			return exitUsage
		}
		return exitOK
	}
	xe := asExit(err, actionRan)
	if jsonWanted(args) && (e.out == nil || !e.out.errorShown) {
		json.NewEncoder(stdout).Encode(map[string]any{"ok": false, "error": xe.Error(), "exit_code": xe.code})
	}
	fmt.Fprintf(stderr, "bgd: %v\n", xe)
	return xe.code
}

// flagsFirst reorders the arguments into the order urfave/cli/v2 parses
// (it stops reading flags at the first positional argument, and reads
// global flags only before the command):
//
//	bgd [global flags] command [global or command flags] [args]
//
// becomes
//
//	bgd [global flags] [global flags found after the command] command [command flags] [args]
//
// so that `bgd switch green --force` and `bgd status --json` work. A flag
// the command defines is the command's, even when a global flag has the same
// name; a flag's value goes with it (`-s web`, `--config=f.yml`); "--" ends
// the reordering and what follows it stays positional. A global flag that
// needs a value but is last is a usage error (args come back unchanged).
func flagsFirst(args []string, app *cli.App) ([]string, error) {
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		if takesValue(app.Flags, args[i]) {
			i++
		}
		i++
	}
	if i >= len(args) {
		return args, nil
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return args, nil
	}
	globals := append([]string{}, args[:i]...)
	own := []string{args[i]}
	var positional []string
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		switch {
		case a == "--":
			positional = append(positional, rest[j:]...)
			j = len(rest)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			to := &own
			flags := cmd.Flags
			if findFlag(cmd.Flags, a) == nil && findFlag(app.Flags, a) != nil {
				to, flags = &globals, app.Flags
			}
			*to = append(*to, a)
			if takesValue(flags, a) {
				if j+1 >= len(rest) {
					if to == &globals {
						return args, usagef("flag %s needs a value", a)
					}
					continue // urfave reports it for the command's flags
				}
				j++
				*to = append(*to, rest[j])
			}
		default:
			positional = append(positional, a)
		}
	}
	out := append(globals, own...)
	return append(out, positional...), nil
}

// findFlag returns the flag arg names ("-s", "--json", "--config=f.yml").
func findFlag(flags []cli.Flag, arg string) cli.Flag {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// takesValue reports whether arg is a flag (without "=value") that reads the
// next argument as its value.
func takesValue(flags []cli.Flag, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	f := findFlag(flags, arg)
	if f == nil {
		return false
	}
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}

// helpOrVersion reports whether the arguments ask for help or the version.
func helpOrVersion(args []string) bool {
	for _, a := range args[1:] {
		switch a {
		case "--":
			return false
		case "-h", "--help", "help", "--version":
			return true
		}
	}
	return false
}

func jsonWanted(args []string) bool {
	for _, a := range args {
		if a == "--json" || a == "-json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// selfPath is how to run this binary again (for slots of the embedded
// default and for a detached proxy). The path is not resolved through
// symlinks, so bin/blue_green_deploy and test harness links keep working.
func selfPath() string {
	arg0 := os.Args[0]
	if !strings.Contains(arg0, "/") {
		if p, err := exec.LookPath(arg0); err == nil {
			arg0 = p
		}
	}
	if abs, err := filepath.Abs(arg0); err == nil {
		if _, err := os.Stat(abs); err == nil {
			return abs
		}
	}
	if exe, err := os.Executable(); err == nil {
		return exe
	}
	return arg0
}

// loadConfig reads the configuration the global flags point at.
func (e *env) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(config.Source{Path: e.opts.config, Getenv: e.getenv, Self: selfPath()})
	if err != nil {
		return nil, err
	}
	if sf := e.opts.stateFile; sf != "" {
		cfg.StateFile = sf
	}
	e.textfileDir = cfg.Metrics.TextfileDir
	if cfg.StateFile != "" && len(cfg.Services) > 1 {
		from := "--state-file"
		if e.opts.stateFile == "" {
			from = "BG_STATE_FILE"
		}
		return nil, usagef("%s applies to a single service; %d services are configured (%s): each keeps <state_dir>/<service>.json",
			from, len(cfg.Services), strings.Join(cfg.ServiceNames(), ", "))
	}
	return cfg, nil
}

// logger is for the foreground proxy: warnings and errors, every step with
// --verbose.
func (e *env) logger() *slog.Logger {
	level := slog.LevelWarn
	if e.opts.verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

// commandLogger is for a one-shot command: without --verbose it shows
// warnings only. Every error such a command hits is returned, and run prints
// it once ("bgd: ..."); the orchestrator's error records (a failed deploy, a
// rejected nginx reload) would print it a second time.
func (e *env) commandLogger() *slog.Logger {
	l := e.logger()
	if e.opts.verbose {
		return l
	}
	return slog.New(belowError{l.Handler()})
}

// belowError drops records of level Error and above.
type belowError struct{ slog.Handler }

func (h belowError) Enabled(ctx context.Context, l slog.Level) bool {
	return l < slog.LevelError && h.Handler.Enabled(ctx, l)
}
func (h belowError) WithAttrs(a []slog.Attr) slog.Handler { return belowError{h.Handler.WithAttrs(a)} }
func (h belowError) WithGroup(n string) slog.Handler      { return belowError{h.Handler.WithGroup(n)} }

// orchestrator builds the orchestrator of the selected service.
func (e *env) orchestrator(c *cli.Context, cfg *config.Config, service string) (*orchestrator.Orchestrator, error) {
	if service == "" {
		service = e.opts.service
	}
	svc, err := cfg.Service(service)
	if err != nil {
		return nil, err
	}
	out := newPrinter(e)
	return orchestrator.New(cfg, svc.Name, orchestrator.Options{
		LockTimeout:   e.opts.lockTimeout,
		NoWaitAgents:  !e.opts.waitAgents,
		AgentsTimeout: e.opts.agentsTimeout,
		// With the etcd backend, `bgd render` prints this host's load
		// balancer configuration (what its agent applies), not the fleet's.
		LocalBalancer: c.Command.Name == "render",
		Command:       strings.TrimSpace(c.Command.Name + " " + strings.Join(c.Args().Slice(), " ")),
		Logger:        e.commandLogger(),
		Progress:      out.progress,
		SpawnProxy:    func() (int, error) { return orchestrator.SpawnProxy(cfg, svc.Name, selfPath()) },
	})
}
