package builtin

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// watchAfter is how long a request waits for its slot before the proxy
// starts watching for its client leaving. Quicker requests never pay for
// the watch.
const watchAfter = 50 * time.Millisecond

// clientWatch notices a client that closes its connection while its
// request waits for the slot, and then cuts the connection to the slot
// (the request's slot handler sees its context end; nginx's 499). It
// peeks at the client's socket (MSG_PEEK: nothing is read, a pipelined
// next request stays where it is); bytes there end the watch, as
// net/http's background read ends at a pipelined request.
type clientWatch struct {
	c     *frontConn
	timer *time.Timer
	raw   syscall.RawConn
	// gone: the client left (or a write to it failed); left gets a value
	// when the watch sees it leave.
	gone atomic.Bool
	left chan struct{}

	mu      sync.Mutex
	active  bool          // a request is being served
	up      net.Conn      // the slot connection to cut
	running chan struct{} // closed when a started watch ends
}

func (w *clientWatch) init(c *frontConn) {
	w.c = c
	if sc, ok := c.conn.(syscall.Conn); ok {
		w.raw, _ = sc.SyscallConn()
	}
	w.left = make(chan struct{}, 1)
	w.timer = time.AfterFunc(time.Hour, w.run)
	w.timer.Stop()
}

// start arms the watch for a new request.
func (w *clientWatch) start() {
	w.gone.Store(false)
	select {
	case <-w.left:
	default:
	}
	w.mu.Lock()
	w.active, w.up, w.running = true, nil, nil
	w.mu.Unlock()
	if w.raw != nil {
		w.timer.Reset(watchAfter)
	}
}

// cut names the slot connection to cut if the client leaves.
func (w *clientWatch) cut(up net.Conn) {
	w.mu.Lock()
	w.up = up
	w.mu.Unlock()
	if w.gone.Load() {
		up.SetDeadline(aLongTimeAgo)
	}
}

// stop ends the watch of the request.
func (w *clientWatch) stop() {
	w.timer.Stop()
	w.mu.Lock()
	w.active, w.up = false, nil
	done := w.running
	w.mu.Unlock()
	if done != nil {
		w.c.conn.SetReadDeadline(aLongTimeAgo)
		<-done
		w.c.conn.SetReadDeadline(time.Time{})
	}
}

func (w *clientWatch) run() {
	w.mu.Lock()
	if !w.active {
		w.mu.Unlock()
		return
	}
	done := make(chan struct{})
	w.running = done
	w.mu.Unlock()
	defer close(done)
	var one [1]byte
	left := false
	err := w.raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err == syscall.EAGAIN || err == syscall.EINTR {
			return false
		}
		left = err != nil || n == 0
		return true
	})
	if err != nil || !left {
		return
	}
	w.gone.Store(true)
	w.left <- struct{}{}
	w.mu.Lock()
	if w.up != nil {
		w.up.SetDeadline(aLongTimeAgo)
	}
	w.mu.Unlock()
}
