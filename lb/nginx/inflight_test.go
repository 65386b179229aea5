package nginx

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
)

// TestParseProcAddr: the kernel's hex addresses, IPv4 and IPv6 (an
// IPv4-mapped one reads as IPv4).
func TestParseProcAddr(t *testing.T) {
	for _, c := range []struct {
		in   string
		ip   string
		port int
		ok   bool
	}{
		{"0100007F:138D", "127.0.0.1", 5005, true},
		{"00000000000000000000000001000000:138E", "::1", 5006, true},
		{"0000000000000000FFFF00000100007F:1F90", "127.0.0.1", 8080, true},
		{"0100007F", "", 0, false},
		{"zz00007F:0050", "", 0, false},
		{"0100:0050", "", 0, false},
	} {
		ip, port, ok := parseProcAddr(c.in)
		if ok != c.ok || (ok && (ip != netip.MustParseAddr(c.ip) || port != c.port)) {
			t.Errorf("parseProcAddr(%q) = %v %d %v, want %s %d %v", c.in, ip, port, ok, c.ip, c.port, c.ok)
		}
	}
}

// TestCountEstablished reads a recorded table: only ESTABLISHED sockets
// whose remote end is the slot count (not its listener, not the server
// side of the same connections, not TIME_WAIT).
func TestCountEstablished(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:138D 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A1B2 0100007F:138D 01 00000000:00000000 00:00000000 00000000    33        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:138D 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:A1B3 0100007F:138D 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
   4: 0100007F:A1B4 0100007F:138D 01 00000000:00000000 00:00000000 00000000    33        0 4 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:A1B5 0100007F:138E 01 00000000:00000000 00:00000000 00000000    33        0 5 1 0000000000000000 20 4 30 10 -1
   6: 0200007F:A1B6 0200007F:138D 01 00000000:00000000 00:00000000 00000000    33        0 6 1 0000000000000000 20 4 30 10 -1
`
	file := filepath.Join(t.TempDir(), "tcp")
	if err := os.WriteFile(file, []byte(table), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := countEstablished(file, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, 5005)
	if err != nil || n != 2 {
		t.Errorf("countEstablished = %d, %v; want 2 (rows 1 and 4)", n, err)
	}
	if n, err := countEstablished(filepath.Join(t.TempDir(), "tcp6"), nil, 5005); err != nil || n != 0 {
		t.Errorf("a missing table = %d, %v; want 0, nil", n, err)
	}
}

// TestInFlightCountsRealConnections: the real kernel tables of this host
// see connections opened here to a listener, and stop seeing them once
// closed.
func TestInFlightCountsRealConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	b := &Balancer{}
	u := lb.Upstream{Color: config.Blue, Host: lb.LocalHost, Port: port}
	ctx := context.Background()
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if n, err := b.InFlight(ctx, u); err != nil || n != 3 {
		t.Fatalf("3 open connections: InFlight = %d, %v; want 3", n, err)
	}
	for _, c := range conns {
		c.Close()
	}
	if n, err := b.InFlight(ctx, u); err != nil || n != 0 {
		t.Fatalf("all closed: InFlight = %d, %v; want 0", n, err)
	}
}
