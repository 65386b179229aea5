package nginx

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/bgd-dev/bgd/lb"
)

var _ lb.Drainer = (*Balancer)(nil)

// procNetTCP are the kernel's tables of this network namespace's TCP
// sockets (a variable for the tests).
var procNetTCP = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// InFlight is not a count of requests: nginx-light has no per-upstream
// counters (no stub_status per server, no API). It is the number of
// ESTABLISHED TCP connections on this host, in bgd's network namespace,
// to u's address and port: nginx's connections to that slot, which after
// a flip only the old workers hold, for the requests they still serve (an
// old worker caches no connection once it is shutting down, and exits when
// its last request ends). Any other client connected to the slot at that
// moment (a monitoring probe, a keep-alive client that bypasses nginx)
// counts too, so a drain can only end later than it should, never earlier.
// nginx must run in bgd's network namespace (the same host, or container).
//
// In mode runtime no reload ends the old workers: nginx keeps its idle
// connections to the old slot until the runtime file's upstream
// keepalive_timeout (1s) closes them, so a drain ends at most about 1s
// after the slot's last request.
func (b *Balancer) InFlight(ctx context.Context, u lb.Upstream) (int, error) {
	addrs, err := slotAddrs(ctx, u.Host)
	if err != nil {
		return 0, fmt.Errorf("nginx: in-flight connections to %s (%s): %w", u.Addr(), u.Color, err)
	}
	n := 0
	for _, file := range procNetTCP {
		c, err := countEstablished(file, addrs, u.Port)
		if err != nil {
			return 0, fmt.Errorf("nginx: in-flight connections to %s (%s): %w", u.Addr(), u.Color, err)
		}
		n += c
	}
	return n, nil
}

// slotAddrs is host as addresses: an IP literal (bracketed for IPv6), or a
// name resolved now.
func slotAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(h); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
	if err != nil {
		return nil, err
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// countEstablished counts the ESTABLISHED sockets of a /proc/net/tcp{,6}
// table whose remote end is one of addrs on port. A table that does not
// exist (no IPv6) counts 0.
func countEstablished(file string, addrs []netip.Addr, port int) (int, error) {
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "01" { // TCP_ESTABLISHED
			continue
		}
		ip, p, ok := parseProcAddr(fields[2])
		if !ok || p != port {
			continue
		}
		for _, a := range addrs {
			if a == ip {
				n++
				break
			}
		}
	}
	return n, sc.Err()
}

// parseProcAddr reads "0100007F:138D" (IPv4) or 32 hex digits and a port
// (IPv6): the address is in 32-bit words of host byte order (little-endian
// on every platform bgd runs on).
func parseProcAddr(s string) (netip.Addr, int, bool) {
	h, ps, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, false
	}
	port, err := strconv.ParseUint(ps, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, false
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	a, _ := netip.AddrFromSlice(raw)
	return a.Unmap(), int(port), true
}
