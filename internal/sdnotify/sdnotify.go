// Package sdnotify tells systemd that a Type=notify service is ready: one
// datagram, "READY=1", to the socket systemd names in $NOTIFY_SOCKET (see
// sd_notify(3)). Outside such a unit NOTIFY_SOCKET is unset and Ready does
// nothing, so a program may call it wherever it runs.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Ready sends "READY=1" to $NOTIFY_SOCKET. It returns nil when the variable
// is unset (not started by systemd as Type=notify) and an error naming the
// socket when the message cannot be sent.
func Ready() error { return send("READY=1") }

func send(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET=%q is neither a path nor an abstract socket (@name)", name)
	}
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	if name[0] == '@' {
		addr.Name = "\x00" + name[1:] // Linux's abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %s: %w", name, err)
	}
	return nil
}
