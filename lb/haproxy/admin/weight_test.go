package admin

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestParseGetWeight(t *testing.T) {
	w, err := parseGetWeight(answer(t, "get_weight.txt"))
	if err != nil || w != (Weight{Current: 10, Initial: 1}) {
		t.Errorf("parseGetWeight(recorded) = %+v, %v; want 10 (initial 1)", w, err)
	}
	for _, bad := range []string{"", "\n", "10\n\n", "x (initial 1)\n\n", "10 (initial y)\n\n", "-1 (initial 1)\n\n",
		answer(t, "weight_no_such_server.txt"), answer(t, "unknown_command.txt")} {
		if w, err := parseGetWeight(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("parseGetWeight(%.30q) = %+v, %v; want ErrMalformed", bad, w, err)
		}
	}
}

func FuzzParseGetWeight(f *testing.F) {
	fuzzParser(f, parseGetWeight, func(t *testing.T, w Weight) {
		if w.Current < 0 || w.Initial < 0 {
			t.Fatalf("negative weight: %+v", w)
		}
	})
}

// TestWeightCommands: SetWeight and GetWeight send exactly HAProxy's
// commands, turn its error texts into *CommandError, and refuse what HAProxy
// would refuse (or misread) without sending anything.
func TestWeightCommands(t *testing.T) {
	f := startFake(t, func(cmd string) string {
		switch {
		case strings.HasPrefix(cmd, "get weight app_split/"):
			return answer(t, "get_weight.txt")
		case strings.HasPrefix(cmd, "get weight nope/"):
			return answer(t, "weight_no_such_backend.txt")
		case cmd == "set weight app_split/nope 10":
			return answer(t, "weight_no_such_server.txt")
		case strings.HasPrefix(cmd, "set weight app_split/"):
			return "\n"
		}
		return answer(t, "unknown_command.txt")
	})
	c, ctx := New(f.Addr), context.Background()
	if err := c.SetWeight(ctx, "app_split", "green", 10); err != nil {
		t.Errorf("SetWeight: %v", err)
	}
	if err := c.SetWeight(ctx, "app_split", "blue", 0); err != nil {
		t.Errorf("SetWeight 0: %v", err)
	}
	if err := c.SetWeight(ctx, "app_split", "blue", MaxWeight); err != nil {
		t.Errorf("SetWeight %d: %v", MaxWeight, err)
	}
	w, err := c.GetWeight(ctx, "app_split", "green")
	if err != nil || w != (Weight{Current: 10, Initial: 1}) {
		t.Errorf("GetWeight = %+v, %v", w, err)
	}
	var ce *CommandError
	if err := c.SetWeight(ctx, "app_split", "nope", 10); !errors.As(err, &ce) || ce.Answer != "No such server." {
		t.Errorf("SetWeight of a missing server: %v, want HAProxy's \"No such server.\"", err)
	}
	if _, err := c.GetWeight(ctx, "nope", "blue"); !errors.As(err, &ce) || ce.Answer != "No such backend." {
		t.Errorf("GetWeight of a missing backend: %v, want HAProxy's \"No such backend.\"", err)
	}
	sent := f.received()
	for _, tc := range []struct {
		backend, server string
		weight          int
	}{{"app_split", "green", -1}, {"app_split", "green", MaxWeight + 1}, {"app split", "green", 1}, {"app_split", "g;show info", 1}, {"", "green", 1}} {
		if err := c.SetWeight(ctx, tc.backend, tc.server, tc.weight); !errors.Is(err, ErrBadArgument) {
			t.Errorf("SetWeight(%q, %q, %d) = %v, want ErrBadArgument", tc.backend, tc.server, tc.weight, err)
		}
	}
	if _, err := c.GetWeight(ctx, "app_split", "a/b c"); !errors.Is(err, ErrBadArgument) {
		t.Errorf("GetWeight with a space: %v, want ErrBadArgument", err)
	}
	want := []string{"set weight app_split/green 10", "set weight app_split/blue 0", "set weight app_split/blue 256",
		"get weight app_split/green", "set weight app_split/nope 10", "get weight nope/blue"}
	if strings.Join(sent, "|") != strings.Join(want, "|") {
		t.Errorf("sent\n%q\nwant\n%q", sent, want)
	}
	if got := f.received(); len(got) != len(sent) {
		t.Errorf("bad arguments were sent: %q", got[len(sent):])
	}
}
