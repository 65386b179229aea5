package freeport

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestPickNeverRepeatsAndStaysInRange(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p, err := Pick(24000, 24100)
		if err != nil {
			t.Fatal(err)
		}
		if p < 24000 || p >= 24100 || seen[p] {
			t.Fatalf("Pick gave %d (seen before: %v), want a new port in 24000-24099", p, seen[p])
		}
		seen[p] = true
	}
}

func TestPickSkipsABoundPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	p, err := Pick(busy, busy+1)
	if err == nil {
		t.Fatalf("Pick gave %d, which is bound", p)
	}
	if want := "no free port found in " + strconv.Itoa(busy); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
}
