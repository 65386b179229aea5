package config

import (
	"net/netip"
	"strconv"
	"strings"
)

// use is one address something of the config binds: a slot's port (on
// every address, as the app may bind it so), a load balancer's listen, an
// HAProxy admin socket on TCP.
type use struct {
	port int
	// host is normalised: "" for a wildcard (every address), else an IP in
	// canonical form, "localhost", or a lower-cased host name.
	host string
	wild bool
	// share names uses that may overlap one another (the same nginx or
	// HAProxy process tells them apart); "" for an exclusive use.
	share string
	who   string
}

func newUse(host string, port int, share, who string) use {
	h := normHost(host)
	return use{port: port, host: h, wild: h == "", share: share, who: who}
}

// normHost spells every way of saying "every address" as "" and every IP
// in its canonical form: "", "*", "0.0.0.0", "::", "[::]" are one.
func normHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	switch h {
	case "", "*":
		return ""
	}
	if a, err := netip.ParseAddr(h); err == nil {
		a = a.Unmap()
		if a.IsUnspecified() {
			return ""
		}
		return a.WithZone("").String()
	}
	return h
}

// aliases are the other spellings that bind the same socket as h.
func aliases(h string) []string {
	switch h {
	case "localhost":
		return []string{"127.0.0.1", "::1"}
	case "127.0.0.1", "::1":
		return []string{"localhost"}
	}
	return nil
}

// shares are the values use.share takes besides "".
var shares = [...]string{"nginx", "haproxy", "haproxy-admin"}

// bucket keeps, of the uses it was given, the first one and the first one
// outside each share: all a conflict check needs, in constant time.
type bucket struct {
	first    *use
	firstNot [len(shares)]*use
}

func (b *bucket) put(u *use) {
	if b.first == nil {
		b.first = u
	}
	for i, sh := range shares {
		if b.firstNot[i] == nil && u.share != sh {
			b.firstNot[i] = u
		}
	}
}

// conflict returns a use in b that u may not overlap, or nil.
func (b *bucket) conflict(u *use) *use {
	if b == nil {
		return nil
	}
	for i, sh := range shares {
		if u.share == sh {
			return b.firstNot[i]
		}
	}
	return b.first
}

type portUses struct {
	all, wild bucket
	hosts     map[string]*bucket
}

// addrIndex finds colliding addresses in constant time per use, so that
// validation stays linear in the number of services.
type addrIndex struct {
	ports map[int]*portUses
	// sockets are the admin unix sockets named so far: path to service.
	sockets map[string]string
}

func newAddrIndex() *addrIndex {
	return &addrIndex{ports: map[int]*portUses{}, sockets: map[string]string{}}
}

// add records u unless it collides with a use already recorded, which it
// returns. A wildcard collides with everything on its port; a specific
// address with a wildcard, the same address, or its aliases (localhost
// and 127.0.0.1 or ::1). Two different specific addresses do not collide.
func (x *addrIndex) add(u use) *use {
	pu := x.ports[u.port]
	if pu == nil {
		pu = &portUses{hosts: map[string]*bucket{}}
		x.ports[u.port] = pu
	}
	var other *use
	if u.wild {
		other = pu.all.conflict(&u)
	} else {
		other = pu.wild.conflict(&u)
		for _, h := range append([]string{u.host}, aliases(u.host)...) {
			if other == nil {
				other = pu.hosts[h].conflict(&u)
			}
		}
	}
	if other != nil {
		return other
	}
	pu.all.put(&u)
	if u.wild {
		pu.wild.put(&u)
	} else {
		b := pu.hosts[u.host]
		if b == nil {
			b = &bucket{}
			pu.hosts[u.host] = b
		}
		b.put(&u)
	}
	return nil
}

// splitListen splits an nginx or HAProxy listen that checkListen accepted:
// "80" and "*:80" are every address.
func splitListen(listen string) (host string, port int) {
	i := strings.LastIndex(listen, ":")
	port, _ = strconv.Atoi(listen[i+1:])
	if i < 0 {
		return "", port
	}
	return listen[:i], port
}
