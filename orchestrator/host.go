package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/internal/sdnotify"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/lb/builtin"
	"github.com/bgd-dev/bgd/slots"
)

// SpawnProxy starts `bgd proxy` for the service, detached, and returns its
// pid: self (how to run bgd again) with the config's path, the service and,
// when it is the only service, its state file (several services each keep
// <state_dir>/<service>.json, which the proxy finds itself with the same
// config, working directory and environment: --state-file would be
// refused). It logs to <state dir>/logs/<service>-proxy.log and carries
// the proxy marker (slots.ProxyMarker), by which bgd recognises it. It is
// what the CLI passes as Options.SpawnProxy.
func SpawnProxy(cfg *config.Config, service, self string) (int, error) {
	spec, err := proxySpec(cfg, service, self)
	if err != nil {
		return 0, err
	}
	p, err := slots.StartProcess(spec)
	if err != nil {
		return 0, err
	}
	return p.PID, nil
}

// proxySpec is how SpawnProxy starts the proxy of service.
func proxySpec(cfg *config.Config, service, self string) (slots.Spec, error) {
	svc, err := cfg.Service(service)
	if err != nil {
		return slots.Spec{}, err
	}
	statePath, err := filepath.Abs(cfg.StatePath(svc.Name))
	if err != nil {
		return slots.Spec{}, err
	}
	argv := []string{self}
	if cfg.Path != "" {
		p, _ := filepath.Abs(cfg.Path)
		argv = append(argv, "--config", p)
	}
	argv = append(argv, "--service", svc.Name)
	if len(cfg.Services) == 1 {
		argv = append(argv, "--state-file", statePath)
	}
	argv = append(argv, "proxy")
	return slots.Spec{Argv: argv, LogPath: filepath.Join(filepath.Dir(statePath), "logs", svc.Name+"-proxy.log"),
		Marker: slots.ProxyMarker(statePath, svc.Name)}, nil
}

// RunProxy runs the builtin proxy of service in the foreground until ctx
// ends (`bgd proxy`, for systemd): it listens on lb.builtin.listen and
// follows the service's state file, whose directory it makes if need be.
func RunProxy(ctx context.Context, cfg *config.Config, service string, logger *slog.Logger) error {
	svc, err := cfg.Service(service)
	if err != nil {
		return err
	}
	logger = lb.OrDiscard(logger)
	path := cfg.StatePath(svc.Name)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("proxy: state directory: %w", err)
	}
	p := &builtin.Proxy{Service: svc.Name, Listen: svc.LB.Builtin.Listen, AdminListen: cfg.AdminListen(svc.Name), StatePath: path,
		BluePort: svc.Blue.Port, GreenPort: svc.Green.Port, UpstreamHost: svc.Host(config.Blue), Logger: logger,
		// Under a Type=notify unit (bgd-proxy@), systemd counts the unit
		// started only now, so what is ordered after it finds it serving.
		Ready: func() {
			if err := sdnotify.Ready(); err != nil {
				logger.Warn("proxy: could not tell systemd it is ready", "err", err)
			}
		}}
	return p.Run(ctx)
}

// SlotLog is the end of the log of service's color slot: its path and its
// last lines (at least 1). It needs no orchestrator, so no load balancer.
// Under the systemd runner the log is the unit's journal, and path is the
// unit's name.
func SlotLog(cfg *config.Config, service string, color config.Color, lines int) (path, tail string, err error) {
	svc, err := cfg.Service(service)
	if err != nil {
		return "", "", err
	}
	if svc.Runner == config.RunnerSystemd {
		return unitLog(&slots.Systemd{}, slots.SlotUnit(svc.Name, color.String()), lines)
	}
	path = cfg.LogPath(svc.Name, color)
	if _, err := os.Stat(path); err != nil {
		return "", "", fmt.Errorf("no log for %s: %w (has it ever been started?)", color, err)
	}
	return path, slots.LogTail(path, lines), nil
}

// unitLog is the end of unit's journal (journalctl -u unit -n lines).
func unitLog(u *slots.Systemd, unit string, lines int) (string, string, error) {
	if err := u.Ready(); err != nil {
		return "", "", noSystemdIsUsage(err)
	}
	tail, err := u.JournalTail(unit, lines)
	if err != nil {
		return "", "", failf("logs of %s: %w", unit, err)
	}
	return unit, tail, nil
}
