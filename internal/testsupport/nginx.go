package testsupport

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Nginx is a real nginx master with its own prefix: configuration, pid
// file, error log and temp paths all live under one directory, and it
// listens only where the files in Prefix/conf.d/ (bgd's) say. nginx.conf
// includes conf.d/*.conf.
type Nginx struct {
	Bin, Prefix, Conf, PidFile, ErrLog string
	opts                               NginxOptions
	proc                               *Proc
}

// NginxOptions say how to write nginx.conf and run the master.
type NginxOptions struct {
	// MainExtra is added to the main context (e.g. worker_shutdown_timeout 1s;).
	MainExtra string
	// HTTPExtra is added to the http context.
	HTTPExtra string
	// WorkerConnections is events' worker_connections. Default 1024.
	WorkerConnections int
	// Output receives the master's stdout and stderr. Default: the file
	// nginx.out in the prefix.
	Output io.Writer
}

// NewNginx writes nginx.conf in prefix (created if needed) without starting
// a master.
func NewNginx(bin, prefix string, o NginxOptions) (*Nginx, error) {
	n := &Nginx{Bin: bin, Prefix: prefix, Conf: filepath.Join(prefix, "nginx.conf"),
		PidFile: filepath.Join(prefix, "nginx.pid"), ErrLog: filepath.Join(prefix, "error.log"), opts: o}
	for _, d := range []string{filepath.Join(prefix, "conf.d"), filepath.Join(prefix, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers would run as nobody, who cannot enter a 0700 temp dir
	}
	if o.WorkerConnections == 0 {
		o.WorkerConnections = 1024
	}
	var temps strings.Builder
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "    %s_temp_path %s;\n", kind, filepath.Join(prefix, "tmp", kind))
	}
	conf := fmt.Sprintf(`# nginx for bgd's tests and benchmark
%s
worker_processes 2;
error_log %s notice;
pid %s;
%s
events { worker_connections %d; }
http {
    access_log off;
%s%s
    include %s/conf.d/*.conf;
}
`, user, n.ErrLog, n.PidFile, o.MainExtra, o.WorkerConnections, temps.String(), o.HTTPExtra, prefix)
	return n, os.WriteFile(n.Conf, []byte(conf), 0o644)
}

// StartNginx writes nginx.conf and starts the master.
func StartNginx(bin, prefix string, o NginxOptions) (*Nginx, error) {
	n, err := NewNginx(bin, prefix, o)
	if err != nil {
		return nil, err
	}
	return n, n.Start()
}

// Command is the argv of an nginx command aimed at this instance, e.g.
// Command("-s", "reload").
func (n *Nginx) Command(args ...string) []string {
	return append([]string{n.Bin, "-p", n.Prefix, "-e", n.ErrLog, "-c", n.Conf}, args...)
}

// Start runs the master in the foreground (daemon off) in its own process
// group and waits for its pid file.
func (n *Nginx) Start() error {
	out := n.opts.Output
	if out == nil {
		f, err := os.Create(filepath.Join(n.Prefix, "nginx.out"))
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	cmd := exec.Command(n.Bin, n.Command("-g", "daemon off;")[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	p, err := StartReady("nginx", cmd, 5*time.Second, func(p *Proc) bool {
		data, err := os.ReadFile(n.PidFile)
		return err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(p.Pid())
	})
	if err != nil {
		data, _ := os.ReadFile(filepath.Join(n.Prefix, "nginx.out"))
		return fmt.Errorf("%w (no pid file); its output:\n%s\nerror log:\n%s", err, data, n.ErrorLog())
	}
	n.proc = p
	return nil
}

// Proc is the running master (nil before Start).
func (n *Nginx) Proc() *Proc { return n.proc }

// Stop ends the master gracefully (SIGQUIT), its whole group after 5 s.
func (n *Nginx) Stop() {
	if n.proc != nil {
		n.proc.Stop(syscall.SIGQUIT, 5*time.Second)
	}
}

// Kill ends the master and its workers at once (for "nginx is not
// running" tests).
func (n *Nginx) Kill() {
	if n.proc != nil {
		n.proc.Kill()
	}
}

// ErrorLog is the content of the error log.
func (n *Nginx) ErrorLog() string {
	data, _ := os.ReadFile(n.ErrLog)
	return string(data)
}
