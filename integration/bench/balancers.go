package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// front is the lb: section of a bench service behind driver, and the port
// its clients reach: one of HAProxy's frontends, or a free port nginx or
// the builtin proxy will listen on.
func (b *bench) front(driver, service string) (map[string]any, int, error) {
	if driver == "haproxy" {
		f := map[string]*haFrontend{"app": b.haApp, "dp": b.haDP}[service]
		return f.lb(), f.port, nil
	}
	var port int
	if err := freePorts(&port); err != nil {
		return nil, 0, err
	}
	if driver == "builtin" {
		return map[string]any{"driver": "builtin", "builtin": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", port)}}, port, nil
	}
	return nginxLB(b.nginx, service, port, map[string]any{"access_log": filepath.Join(b.work, "nginx-"+service+".json.log")}), port, nil
}

// nginxLB is the lb: section of service behind ng, listening on port,
// with more nginx settings.
func nginxLB(ng *ts.Nginx, service string, port int, more map[string]any) map[string]any {
	n := map[string]any{
		"file":       filepath.Join(ng.Prefix, "conf.d", "bgd-"+service+".conf"),
		"listen":     fmt.Sprintf("127.0.0.1:%d", port),
		"test":       ng.Command("-t", "-q"),
		"reload":     ng.Command("-s", "reload"),
		"verify_url": loopURL(port),
	}
	maps.Copy(n, more)
	return map[string]any{"driver": "nginx", "nginx": n}
}

func loopURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/", port) }

// haFrontend is one service behind HAProxy, configured as a user would:
// HAProxy loads a small base configuration plus, for each service, the
// snippet `bgd render` prints (its admin socket, a frontend whose backend
// one map entry picks, one backend per colour with HAProxy's own checks),
// with the snippet's "bind :80" pointed at a loopback port.
type haFrontend struct {
	service   string
	port      int    // the frontend
	blue, grn int    // the slots' ports
	dir       string // where its socket, map file and snippet live
}

func (f *haFrontend) path(ext string) string { return filepath.Join(f.dir, f.service+ext) }

// lb is the lb: section of the service.
func (f *haFrontend) lb() map[string]any {
	return map[string]any{"driver": "haproxy", "haproxy": map[string]any{
		"socket":   f.path(".sock"),
		"map_file": f.path(".map"),
		"backends": map[string]string{"blue": f.service + "_blue", "green": f.service + "_green"},
	}}
}

// startHAProxy renders the snippets of the "app" and "dp" services with
// `bgd render` and starts HAProxy on them.
func (b *bench) startHAProxy() error {
	dir := filepath.Join(b.work, "haproxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	o := ts.HAProxyOptions{MaxConn: 4000, ConnectTimeout: 5 * time.Second}
	var fronts []*haFrontend
	for _, svc := range []string{"app", "dp"} {
		f := &haFrontend{service: svc, dir: dir}
		if err := freePorts(&f.port, &f.blue, &f.grn); err != nil {
			return err
		}
		// HAProxy will not start without the map file (bgd render says so).
		cfg := filepath.Join(dir, "render-"+svc+".yml")
		err := errors.Join(os.WriteFile(f.path(".map"), []byte(svc+" "+svc+"_blue\n"), 0o644),
			writeConfig(cfg, filepath.Join(dir, "render-state"), map[string]any{svc: serviceConfig(demoCommand(b.bgd), f.blue, f.grn, f.lb())}))
		if err != nil {
			return err
		}
		r, err := b.expect(context.Background(), dir, 0, "--config", cfg, "render")
		if err != nil {
			return err
		}
		if !strings.Contains(r.Stdout, "bind :80\n") {
			return fmt.Errorf("bgd render for %s has no \"bind :80\" line to point at the bench port:\n%s", svc, r.Stdout)
		}
		snippet := strings.Replace(r.Stdout, "bind :80\n", fmt.Sprintf("bind 127.0.0.1:%d\n", f.port), 1)
		if err := os.WriteFile(f.path(".cfg"), []byte(snippet), 0o644); err != nil {
			return err
		}
		o.Files, o.Sockets = append(o.Files, f.path(".cfg")), append(o.Sockets, f.path(".sock"))
		fronts = append(fronts, f)
	}
	h, err := ts.StartHAProxy(b.haproxyBin, dir, o)
	if err != nil {
		return err
	}
	b.reaper.track(h.Proc())
	b.haApp, b.haDP = fronts[0], fronts[1]
	return nil
}

// startBalancers starts the one nginx and the one HAProxy the run uses,
// each serving two services: "app" (flips, deploys) and "dp" (data plane).
// One that is not installed is left out of the tables (a failure in CI).
func (b *bench) startBalancers() error {
	var errs []error
	for _, d := range []string{"nginx", "haproxy"} {
		if !b.wants(d) {
			continue
		}
		var err error
		switch bin := map[string]string{"nginx": b.nginxBin, "haproxy": b.haproxyBin}[d]; {
		case bin == "" && ts.InCI():
			err = fmt.Errorf("%s is not installed, and CI must not skip: install it (see .ci/run)", d)
		case bin == "":
			b.lbErr[d] = d + " is not installed"
			continue
		case d == "nginx":
			if b.nginx, err = ts.StartNginx(bin, filepath.Join(b.work, "nginx"), ts.NginxOptions{WorkerConnections: 4096}); err == nil {
				b.reaper.track(b.nginx.Proc())
			}
		default:
			err = b.startHAProxy()
		}
		if err != nil {
			b.lbErr[d] = err.Error()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
