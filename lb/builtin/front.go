package builtin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The proxy's HTTP/1 front end. Every client connection is accepted here.
// A plain request (see plainHead) is forwarded by the fast path
// (fastpath.go): its head is read, checked and sent to the slot as bytes,
// and the slot's answer is relayed back, all in the connection's own
// goroutine, without net/http's per-request machinery (a request struct,
// header maps, a context, a background read and a response writer per
// request), which is what kept the proxy well below nginx's throughput.
//
// Any other request (a body, an upgrade, Expect, HTTP/1.0, an admin path,
// a preview, a head that does not fit the read buffer, anything unusual)
// is handed with its connection to net/http, which
// serves that connection from then on with Proxy.ServeHTTP and everything
// it does. The request's bytes are handed over unread: net/http parses
// them as if it had accepted the connection.

const (
	// headBufSize bounds a request head the fast path reads; a longer
	// head goes to net/http (which takes up to 1 MiB).
	headBufSize = 8 << 10
	// frontIdleTimeout closes a kept-alive client connection with no
	// request for this long (as the net/http server's IdleTimeout).
	frontIdleTimeout = 120 * time.Second
)

// front accepts the service's connections.
type front struct {
	p   *Proxy
	ln  net.Listener
	srv *http.Server // serves the connections handed over
	// handoff is srv's listener: the connections handed over.
	handoff *handoffListener

	closing atomic.Bool
	mu      sync.Mutex
	conns   map[*frontConn]struct{}
	wg      sync.WaitGroup
}

func newFront(p *Proxy, ln net.Listener, srv *http.Server) *front {
	return &front{p: p, ln: ln, srv: srv, handoff: newHandoffListener(ln.Addr()),
		conns: map[*frontConn]struct{}{}}
}

// serve accepts connections until ctx ends, then shuts down gracefully:
// no new connections, idle ones are closed, and requests in flight get up
// to grace to finish before their connections are cut.
func (f *front) serve(ctx context.Context, grace time.Duration) error {
	srvErr := make(chan error, 1)
	go func() { srvErr <- f.srv.Serve(f.handoff) }()
	acceptErr := make(chan error, 1)
	go func() { acceptErr <- f.accept() }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-acceptErr:
	case err = <-srvErr:
	}
	f.closing.Store(true)
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.wakeIfIdle()
	}
	f.mu.Unlock()

	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	serr := f.srv.Shutdown(sctx)
	if errors.Is(serr, context.DeadlineExceeded) {
		f.srv.Close()
	}
	select {
	case <-done:
	case <-sctx.Done():
		f.mu.Lock()
		for c := range f.conns {
			c.conn.Close()
		}
		f.mu.Unlock()
		<-done
	}
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (f *front) accept() error {
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if f.closing.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors and the like: wait and retry, as
				// net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		fc := newFrontConn(f, c)
		f.mu.Lock()
		if f.closing.Load() {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.conns[fc] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go fc.serve()
	}
}

// forget drops c from the connections served here.
func (f *front) forget(c *frontConn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	f.wg.Done()
}

// frontConn is one client connection served by the fast path.
type frontConn struct {
	f    *front
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	// clientIP is the client's address for X-Forwarded-For.
	clientIP []byte
	// idle: waiting for the next request (shutdown closes it at once).
	idle atomic.Bool
	// head is the request being served (fastpath.go).
	head reqHead
	// watch notices a client that leaves while its request waits for the
	// slot (fastpath.go).
	watch clientWatch
}

func newFrontConn(f *front, c net.Conn) *frontConn {
	fc := &frontConn{f: f, conn: c, br: bufio.NewReaderSize(c, headBufSize), bw: bufio.NewWriterSize(c, 4<<10)}
	if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		fc.clientIP = []byte(host)
	}
	fc.watch.init(fc)
	return fc
}

// wakeIfIdle makes an idle connection's wait for a request end now.
func (c *frontConn) wakeIfIdle() {
	if c.idle.Load() {
		c.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// serve serves c's requests until one is not for the fast path (then c
// is handed over to net/http) or c ends.
func (c *frontConn) serve() {
	defer c.f.forget(c)
	handed := false
	defer func() {
		if !handed {
			c.conn.Close()
		}
	}()
	for {
		c.idle.Store(true)
		c.conn.SetReadDeadline(time.Now().Add(frontIdleTimeout))
		if c.f.closing.Load() {
			return
		}
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		c.idle.Store(false)
		c.conn.SetReadDeadline(time.Now().Add(c.f.p.ReadHeaderTimeout))
		plain, err := c.readHead()
		if err != nil {
			return // a slow or cut head: as net/http, close
		}
		c.conn.SetReadDeadline(time.Time{})
		keep, handoff := !plain, !plain
		if plain {
			keep, handoff = c.f.p.serveFast(c, &c.head)
		}
		if handoff {
			handed = true
			c.f.p.handedOff.Add(1)
			c.f.handoff.push(&handedConn{Conn: c.conn, r: c.br})
			return
		}
		if !keep || c.f.closing.Load() {
			return
		}
	}
}

// readHead waits until a whole request head is in c.br (unread) and
// parses it into c.head; plain reports that it is for the fast path.
func (c *frontConn) readHead() (plain bool, err error) {
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			return parseHead(&c.head, buf[:i+4]), nil
		}
		if c.br.Buffered() == c.br.Size() {
			return false, nil // too long for the fast path: net/http judges it
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			return false, err // slow (ReadHeaderTimeout), cut off, or shut down
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// handedConn is a connection handed to net/http: its reads start with
// what the front end had buffered, unread.
type handedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *handedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite lets net/http half-close the connection before it closes it
// after an error answer (431, 400), so that a client still sending gets
// the answer rather than a reset.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// handoffListener is the net/http server's listener: it accepts the
// connections the front end hands over.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server, or closes it when the server is gone.
func (l *handoffListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
