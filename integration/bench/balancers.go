package main

import (
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

// haFrontend is one service behind HAProxy: a frontend on port whose
// backend is picked by one map entry (key: the service), one backend per
// colour, as DESIGN.md describes the driver.
type haFrontend struct {
	service    string
	port       int
	blue, grn  int // the slots' ports
	mapFile    string
	haBackends map[string]string // colour -> backend name
}

// haproxyInst is a real HAProxy in the foreground with its own admin socket.
type haproxyInst struct {
	bin, dir, cfg, socket string
	proc                  *proc
}

func startHAProxy(r *reaper, bin, dir string, fronts []*haFrontend) (*haproxyInst, error) {
	h := &haproxyInst{bin: bin, dir: dir, cfg: filepath.Join(dir, "haproxy.cfg"), socket: filepath.Join(dir, "admin.sock")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# HAProxy for the bgd benchmark
global
    stats socket %s mode 600 level admin
    stats timeout 30s
    maxconn 4000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    option idle-close-on-response
`, h.socket)
	for _, f := range fronts {
		f.mapFile = filepath.Join(dir, f.service+".map")
		f.haBackends = map[string]string{"blue": f.service + "_blue", "green": f.service + "_green"}
		if err := os.WriteFile(f.mapFile, []byte(f.service+" "+f.haBackends["blue"]+"\n"), 0o644); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, `
frontend fe_%[1]s
    bind 127.0.0.1:%[2]d
    use_backend %%[str(%[1]s),map(%[3]s)]
    default_backend %[4]s

backend %[4]s
    server blue 127.0.0.1:%[6]d

backend %[5]s
    server green 127.0.0.1:%[7]d
`, f.service, f.port, f.mapFile, f.haBackends["blue"], f.haBackends["green"], f.blue, f.grn)
	}
	if err := os.WriteFile(h.cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command(bin, "-c", "-q", "-f", h.cfg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy -c rejects the bench configuration: %v\n%s", err, out)
	}
	log, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, "-db", "-f", h.cfg)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := r.start("haproxy", cmd)
	if err != nil {
		return nil, err
	}
	h.proc = p
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", h.socket); err == nil {
			c.Close()
			return h, nil
		}
		if p.exited() || time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(dir, "haproxy.log"))
			return nil, fmt.Errorf("haproxy did not open its admin socket; its output:\n%s", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lbConfig is the lb: section of the service of frontend f.
func (h *haproxyInst) lbConfig(f *haFrontend) map[string]any {
	return map[string]any{
		"driver": "haproxy",
		"haproxy": map[string]any{
			"socket":   h.socket,
			"map_file": f.mapFile,
			"backends": f.haBackends,
		},
	}
}
