package testsupport

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Proc is a process started in its own process group, so that a terminal's
// ^C reaches only the harness and Stop can end its children too.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	done chan struct{}
}

// Start runs cmd in its own process group (unless cmd.SysProcAttr is set)
// and reaps it when it exits.
func Start(name string, cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// StartReady runs cmd as Start does and waits, looking every 10 ms, until
// ready reports true. If the process exits first, or within passes, its
// group is killed and the error says which.
func StartReady(name string, cmd *exec.Cmd, within time.Duration, ready func(*Proc) bool) (*Proc, error) {
	p, err := Start(name, cmd)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(within)
	for !ready(p) {
		if p.Exited() || time.Now().After(deadline) {
			why := fmt.Sprintf("not ready within %s", within)
			if p.Exited() {
				why = "exited before it was ready"
			}
			p.Stop(syscall.SIGKILL, time.Second)
			return nil, fmt.Errorf("%s %s", name, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p, nil
}

// Pid is the process's pid (and its group's id).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process alone.
func (p *Proc) Signal(sig syscall.Signal) { syscall.Kill(p.Pid(), sig) }

// Stop sends sig to the process group, SIGKILL after grace, and then
// SIGKILL to the group again for children that outlived their parent.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) {
	if p.Exited() {
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return
	}
	syscall.Kill(-p.Pid(), sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
	}
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
}

// Kill ends the whole group at once and waits for the process.
func (p *Proc) Kill() {
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}

// WaitListening waits until something accepts TCP connections on the
// loopback port, or p (when not nil) exits.
func WaitListening(port int, within time.Duration, p *Proc) error {
	deadline := time.Now().Add(within)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before listening on %d", p.Name, port)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after %s: %w", port, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
