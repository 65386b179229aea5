package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// findBinary returns the path of a system program, or "" when it is not
// installed (Debian puts nginx and haproxy in /usr/sbin, often not in PATH).
func findBinary(name string) string {
	for _, dir := range []string{"", "/usr/sbin/", "/usr/local/sbin/"} {
		if p, err := exec.LookPath(dir + name); err == nil {
			return p
		}
	}
	return ""
}

// nginxInst is a real nginx master with its own prefix (configuration, pid
// file, logs and temp paths under one directory), listening only on the
// loopback ports of the files bgd writes into conf.d/.
type nginxInst struct {
	bin, prefix, conf, pidFile, errLog string
	proc                               *proc
}

func startNginx(r *reaper, bin, dir string) (*nginxInst, error) {
	n := &nginxInst{bin: bin, prefix: dir, conf: filepath.Join(dir, "nginx.conf"),
		pidFile: filepath.Join(dir, "nginx.pid"), errLog: filepath.Join(dir, "error.log")}
	for _, d := range []string{filepath.Join(dir, "conf.d"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers would run as nobody, who cannot enter a 0700 temp dir
	}
	var temps strings.Builder
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "    %s_temp_path %s;\n", kind, filepath.Join(dir, "tmp", kind))
	}
	conf := fmt.Sprintf(`# nginx for the bgd benchmark
%s
worker_processes 2;
error_log %s notice;
pid %s;
events { worker_connections 4096; }
http {
    access_log off;
%s
    include %s/conf.d/*.conf;
}
`, user, n.errLog, n.pidFile, temps.String(), dir)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "nginx.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(bin, append(n.base()[1:], "-g", "daemon off;")...)
	cmd.Stdout, cmd.Stderr = out, out
	p, err := r.start("nginx", cmd)
	if err != nil {
		return nil, err
	}
	n.proc = p
	deadline := time.Now().Add(5 * time.Second)
	for {
		if data, err := os.ReadFile(n.pidFile); err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(p.pid()) {
			return n, nil
		}
		if p.exited() || time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(dir, "nginx.out"))
			return nil, fmt.Errorf("nginx did not start; its output:\n%s\nerror log:\n%s", data, n.errorLog())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// base is the argv prefix of every nginx command aimed at this instance.
func (n *nginxInst) base() []string {
	return []string{n.bin, "-p", n.prefix, "-e", n.errLog, "-c", n.conf}
}

func (n *nginxInst) errorLog() string {
	data, _ := os.ReadFile(n.errLog)
	return string(data)
}

// lbConfig is the lb: section of a service that nginx fronts on port.
func (n *nginxInst) lbConfig(service string, port int) map[string]any {
	return map[string]any{
		"driver": "nginx",
		"nginx": map[string]any{
			"file":       filepath.Join(n.prefix, "conf.d", "bgd-"+service+".conf"),
			"listen":     "127.0.0.1:" + strconv.Itoa(port),
			"test":       append(n.base(), "-t", "-q"),
			"reload":     append(n.base(), "-s", "reload"),
			"verify_url": fmt.Sprintf("http://127.0.0.1:%d/", port),
		},
	}
}

// haFrontend is one service behind HAProxy, configured as a user would:
// HAProxy loads a small base configuration plus, for each service, the
// snippet `bgd render` prints (its admin socket, a frontend whose backend
// one map entry picks, one backend per colour with HAProxy's own checks),
// with the snippet's "bind :80" pointed at a loopback port.
type haFrontend struct {
	service   string
	port      int    // the frontend
	blue, grn int    // the slots' ports
	dir       string // where its socket and map file live
}

func (f *haFrontend) socket() string  { return filepath.Join(f.dir, f.service+".sock") }
func (f *haFrontend) mapFile() string { return filepath.Join(f.dir, f.service+".map") }

// lbConfig is the lb: section of the service.
func (f *haFrontend) lbConfig() map[string]any {
	return map[string]any{
		"driver": "haproxy",
		"haproxy": map[string]any{
			"socket":   f.socket(),
			"map_file": f.mapFile(),
			"backends": map[string]string{"blue": f.service + "_blue", "green": f.service + "_green"},
		},
	}
}

// haproxyInst is a real HAProxy in the foreground.
type haproxyInst struct {
	proc *proc
}

// startHAProxy starts HAProxy with base plus one rendered snippet per
// frontend; render returns what `bgd render` prints for a frontend.
func startHAProxy(r *reaper, bin, dir string, fronts []*haFrontend, render func(*haFrontend) ([]byte, error)) (*haproxyInst, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "base.cfg")
	if err := os.WriteFile(base, []byte(`# HAProxy for the bgd benchmark: the base; each service's snippet is bgd's
global
    maxconn 4000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
`), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-f", base}
	for _, f := range fronts {
		// HAProxy will not start without the map file (bgd render says so).
		if err := os.WriteFile(f.mapFile(), []byte(f.service+" "+f.service+"_blue\n"), 0o644); err != nil {
			return nil, err
		}
		snippet, err := render(f)
		if err != nil {
			return nil, err
		}
		if !bytes.Contains(snippet, []byte("bind :80\n")) {
			return nil, fmt.Errorf("bgd render for %s has no \"bind :80\" line to point at the bench port:\n%s", f.service, snippet)
		}
		snippet = bytes.Replace(snippet, []byte("bind :80\n"), []byte(fmt.Sprintf("bind 127.0.0.1:%d\n", f.port)), 1)
		path := filepath.Join(dir, f.service+".cfg")
		if err := os.WriteFile(path, snippet, 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-f", path)
	}
	if out, err := exec.Command(bin, append([]string{"-c", "-q"}, args...)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy -c rejects the bench configuration (%s): %v\n%s", strings.Join(args, " "), err, out)
	}
	log, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, append([]string{"-db"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := r.start("haproxy", cmd)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, f := range fronts {
		for {
			c, err := net.Dial("unix", f.socket())
			if err == nil {
				c.Close()
				break
			}
			if p.exited() || time.Now().After(deadline) {
				data, _ := os.ReadFile(filepath.Join(dir, "haproxy.log"))
				return nil, fmt.Errorf("haproxy did not open its admin socket %s; its output:\n%s", f.socket(), data)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return &haproxyInst{proc: p}, nil
}
