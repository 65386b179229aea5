package testsupport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// HAProxy is a real HAProxy in the foreground: a small base configuration
// (global, defaults) written into Dir, plus the configuration files the
// caller gives (the snippets bgd renders), each loaded with its own -f.
type HAProxy struct {
	Bin, Dir string
	Base     string // base.cfg
	Log      string // haproxy.log: HAProxy's stdout and stderr
	PidFile  string // master-worker mode only
	Master   string // the master CLI socket (master-worker mode only)
	opts     HAProxyOptions

	mu   sync.Mutex
	proc *Proc
}

// HAProxyOptions say how to write the base and run HAProxy.
type HAProxyOptions struct {
	// Files are the configuration files loaded after the base.
	Files []string
	// Sockets are the admin sockets the files declare: HAProxy is ready
	// when each answers a command.
	Sockets []string
	// MasterWorker runs HAProxy as master and worker (-W, master CLI on
	// Dir/master.sock, pid file), which Reload and Workers need; otherwise
	// one process in debug-foreground mode (-db).
	MasterWorker bool
	// MaxConn is global maxconn (0: HAProxy's default).
	MaxConn int
	// ConnectTimeout is defaults' timeout connect. Default 2s.
	ConnectTimeout time.Duration
}

// StartHAProxy writes the base into dir, checks the whole configuration
// with haproxy -c and starts HAProxy; it waits until every admin socket
// answers.
func StartHAProxy(bin, dir string, o HAProxyOptions) (*HAProxy, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	h := &HAProxy{Bin: bin, Dir: dir, Base: filepath.Join(dir, "base.cfg"), Log: filepath.Join(dir, "haproxy.log"), opts: o}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	var global strings.Builder
	if o.MasterWorker {
		h.PidFile, h.Master = filepath.Join(dir, "haproxy.pid"), filepath.Join(dir, "master.sock")
		fmt.Fprintf(&global, "    master-worker\n    pidfile %s\n", h.PidFile)
	}
	if o.MaxConn > 0 {
		fmt.Fprintf(&global, "    maxconn %d\n", o.MaxConn)
	}
	base := fmt.Sprintf(`# HAProxy for bgd's tests and benchmark: the base; the other files are bgd's
global
%s
defaults
    mode http
    timeout connect %s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
`, global.String(), o.ConnectTimeout)
	if err := os.WriteFile(h.Base, []byte(base), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command(bin, append([]string{"-c", "-q"}, h.files()...)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy -c rejects the configuration (%s): %v\n%s", strings.Join(h.files(), " "), err, out)
	}
	return h, h.Start()
}

func (h *HAProxy) files() []string {
	args := []string{"-f", h.Base}
	for _, f := range h.opts.Files {
		args = append(args, "-f", f)
	}
	return args
}

// Start runs HAProxy and waits for its admin sockets (after Stop: again
// from its files).
func (h *HAProxy) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	logf, err := os.OpenFile(h.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"-db"}
	if h.opts.MasterWorker {
		args = []string{"-W", "-S", h.Master}
	}
	cmd := exec.Command(h.Bin, append(args, h.files()...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	waiting := ""
	p, err := StartReady("haproxy", cmd, 5*time.Second, func(*Proc) bool {
		for _, sock := range h.opts.Sockets {
			if _, err := HAProxyCommand(sock, "show backend"); err != nil {
				waiting = sock
				return false
			}
		}
		return true
	})
	if err != nil && waiting != "" {
		err = fmt.Errorf("%w: its admin socket %s never answered", err, waiting)
	}
	if err != nil {
		return fmt.Errorf("%w; its output:\n%s", err, h.Output())
	}
	h.proc = p
	return nil
}

// Proc is the running HAProxy (the master in master-worker mode).
func (h *HAProxy) Proc() *Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.proc
}

// Stop ends HAProxy (SIGTERM: the master stops its worker), SIGKILL after 5 s.
func (h *HAProxy) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc != nil {
		h.proc.Stop(syscall.SIGTERM, 5*time.Second)
		h.proc = nil
	}
}

// Restart stops HAProxy completely and starts it again from its files.
func (h *HAProxy) Restart() error {
	h.Stop()
	return h.Start()
}

// Output is what HAProxy printed.
func (h *HAProxy) Output() string {
	data, _ := os.ReadFile(h.Log)
	return string(data)
}

// Workers returns the worker pids the master CLI lists (`show proc`).
func (h *HAProxy) Workers() ([]string, error) {
	if h.Master == "" {
		return nil, errors.New("haproxy does not run in master-worker mode")
	}
	// The master opens its CLI a moment after the worker's socket answers,
	// and re-executes itself on a reload: retry a refused connection.
	var ans string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if ans, err = HAProxyCommand(h.Master, "show proc"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	var pids []string
	for _, l := range strings.Split(ans, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == "worker" {
			pids = append(pids, f[0])
		}
	}
	return pids, nil
}

// Reload sends SIGUSR2 to the master and waits until a new worker serves
// the admin sockets.
func (h *HAProxy) Reload() error {
	old, err := h.Workers()
	if err != nil {
		return err
	}
	before := " " + strings.Join(old, " ") + " "
	if p := h.Proc(); p != nil {
		p.Signal(syscall.SIGUSR2)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := h.Workers()
		if err != nil {
			return err
		}
		for _, pid := range pids {
			if !strings.Contains(before, " "+pid+" ") && h.answers() {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no new worker 5s after SIGUSR2 (workers before:%s)", strings.TrimRight(before, " "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *HAProxy) answers() bool {
	for _, sock := range h.opts.Sockets {
		if _, err := HAProxyCommand(sock, "show backend"); err != nil {
			return false
		}
	}
	return true
}

// HAProxyCommand sends one command to an HAProxy CLI socket (admin or
// master) and returns the answer.
func HAProxyCommand(sock, command string) (string, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	data, err := io.ReadAll(c)
	return string(data), err
}
