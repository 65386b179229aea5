package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// Defaults of Client's fields.
const (
	DefaultTimeout   = 2 * time.Second
	DefaultMaxAnswer = 16 << 20
)

// ErrUnreachable: the socket could not be reached (missing, permission
// denied, connection refused, timeout while connecting). Nothing was sent.
var ErrUnreachable = errors.New("haproxy runtime API unreachable")

// ErrBadArgument: an argument would change the meaning of the command line
// (space, ';', '\', control character) or is empty. Nothing was sent.
var ErrBadArgument = errors.New("argument not allowed on the haproxy command line")

// Sentinels a *CommandError unwraps to, recognised from HAProxy's text.
var (
	ErrUnknownMap     = errors.New("haproxy: unknown map")
	ErrEntryNotFound  = errors.New("haproxy: map entry not found")
	ErrPermission     = errors.New("haproxy: permission denied on this socket")
	ErrUnknownCommand = errors.New("haproxy: unknown command")
)

// CommandError is HAProxy answering a command with an error text.
type CommandError struct {
	Command string // the command sent, e.g. "set map /etc/haproxy/bgd.map app app_green"
	Answer  string // HAProxy's answer, trimmed
}

func (e *CommandError) Error() string {
	ans := e.Answer
	if i := strings.IndexByte(ans, '\n'); i >= 0 {
		ans = ans[:i] // "Unknown command" lists every command after the first line
	}
	return fmt.Sprintf("haproxy answered %q to %q", ans, e.Command)
}

// Unwrap maps well-known answers to sentinels, so callers use errors.Is.
func (e *CommandError) Unwrap() error {
	switch {
	case strings.HasPrefix(e.Answer, "Unknown map identifier"):
		return ErrUnknownMap
	case strings.HasPrefix(e.Answer, "entry not found"):
		return ErrEntryNotFound
	case strings.HasPrefix(e.Answer, "Permission denied"):
		return ErrPermission
	case strings.HasPrefix(e.Answer, "Unknown command"):
		return ErrUnknownCommand
	}
	return nil
}

// UnreachableError says which socket could not be reached, and why.
type UnreachableError struct {
	Addr string // as configured: a path or tcp://host:port
	Err  error  // from dialing
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("haproxy admin socket %s: %v", e.Addr, e.Err)
}

// Unwrap returns both ErrUnreachable and the dial error, so errors.Is works
// for ErrUnreachable as for fs.ErrPermission or syscall.ECONNREFUSED.
func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// Client talks to one HAProxy runtime API socket. Every command gets its own
// connection: HAProxy runs a ';'-joined line one command at a time, a failing
// one not stopping the rest, so batching buys no atomicity and would only
// make errors ambiguous. The zero value is not usable; use New.
type Client struct {
	// Addr is the socket: a unix socket path, "unix://path" or "tcp://host:port".
	Addr string
	// Timeout bounds each command (dial, write, read), on top of the
	// context's deadline. Default DefaultTimeout (2s).
	Timeout time.Duration
	// MaxAnswer bounds the bytes read back. Default DefaultMaxAnswer (16 MiB).
	MaxAnswer int64
	// Dial opens the connection. Default: a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// New returns a client of the socket at addr with the defaults.
func New(addr string) *Client { return &Client{Addr: addr} }

func (c *Client) network() (network, address string) {
	switch {
	case strings.HasPrefix(c.Addr, "tcp://"):
		return "tcp", strings.TrimPrefix(c.Addr, "tcp://")
	case strings.HasPrefix(c.Addr, "unix://"):
		return "unix", strings.TrimPrefix(c.Addr, "unix://")
	}
	return "unix", c.Addr
}

// Exec sends one command line and returns HAProxy's whole answer, read until
// HAProxy closes the connection. The answer is not interpreted: show
// commands use it as data, see Do for commands that answer nothing.
func (c *Client) Exec(ctx context.Context, command string) (string, error) {
	if command == "" || strings.ContainsAny(command, ";\n\r") {
		return "", fmt.Errorf("%w: command %q", ErrBadArgument, command)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	network, address := c.network()
	conn, err := dial(ctx, network, address)
	if err != nil {
		return "", &UnreachableError{Addr: c.Addr, Err: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := io.WriteString(conn, command+"\n"); err != nil {
		return "", fmt.Errorf("haproxy admin socket %s: send %q: %w", c.Addr, command, timeoutCause(ctx, err))
	}
	// Half-close: the worker's stats socket closes after one command anyway,
	// but the master CLI waits for the client's end of input.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	limit := c.MaxAnswer
	if limit <= 0 {
		limit = DefaultMaxAnswer
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(conn, limit+1))
	if err != nil {
		return "", fmt.Errorf("haproxy admin socket %s: read answer to %q: %w", c.Addr, command, timeoutCause(ctx, err))
	}
	if n > limit {
		return "", fmt.Errorf("haproxy admin socket %s: answer to %q is larger than %d bytes", c.Addr, command, limit)
	}
	return buf.String(), nil
}

// timeoutCause reports a connection deadline as the context's error: the
// deadline may fire a moment before the context notices it is done.
func timeoutCause(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// Do sends a command that answers nothing on success (set, add, del): any
// non-blank answer is a *CommandError carrying HAProxy's text.
func (c *Client) Do(ctx context.Context, command string) error {
	ans, err := c.Exec(ctx, command)
	if err != nil {
		return err
	}
	if a := strings.TrimSpace(ans); a != "" {
		return &CommandError{Command: command, Answer: a}
	}
	return nil
}

// query runs a show/get command; an answer that is an error text (HAProxy
// has no status codes, only words) becomes a *CommandError.
func (c *Client) query(ctx context.Context, command string, looksLikeError func(string) bool) (string, error) {
	ans, err := c.Exec(ctx, command)
	if err != nil {
		return "", err
	}
	if looksLikeError(ans) {
		return "", &CommandError{Command: command, Answer: strings.TrimSpace(ans)}
	}
	return ans, nil
}

// errorAnswer recognises the error texts of HAProxy 2.6 that can answer a
// show/get command in place of its data.
func errorAnswer(ans string) bool {
	for _, p := range []string{"Unknown command", "Unknown map identifier", "Permission denied",
		"Malformed identifier", "Can't find ", "No such ", "Missing ", "Unknown "} {
		if strings.HasPrefix(ans, p) {
			return true
		}
	}
	return false
}

// checkArg refuses what would split or escape the command line.
func checkArg(what, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s is empty", ErrBadArgument, what)
	}
	for _, r := range v {
		if r <= ' ' || r == ';' || r == '\\' || r == 0x7f {
			return fmt.Errorf("%w: %s %q contains %q", ErrBadArgument, what, v, r)
		}
	}
	return nil
}
