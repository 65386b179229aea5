package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	ts "github.com/bgd-dev/bgd/internal/testsupport"
)

// CanaryStep is one weight of a canary (figure 8): the `bgd` command that
// set it under load, what the load saw meanwhile, and the split measured
// afterwards.
type CanaryStep struct {
	Weight    int          `json:"weight"`
	Command   string       `json:"command"`
	WallMs    float64      `json:"wall_ms"`
	NewConn   ts.WrkResult `json:"new_connection"`
	KeepAlive ts.WrkResult `json:"keep_alive"`
	// Requests answered by each colour when the split was counted, and how
	// many failed.
	Counted  int            `json:"counted"`
	Failures int            `json:"failures"`
	Slots    map[string]int `json:"slots"`
	// Canary is the colour of the canary; Share its percentage.
	Canary string  `json:"canary"`
	Share  float64 `json:"share"`
}

// canaryWeights are the steps of figure 8: a canary deploy at the first,
// `bgd canary` for the others, `bgd promote` for 100.
var canaryWeights = []int{10, 50, 90, 100}

// canaries: figure 8. A canary deploy of the idle colour goes through
// canaryWeights, each set under wrk load; after each, CountSlots counts who
// answers (the share of the canary, against the weight).
func (b *bench) canaries(ctx context.Context, s *service, dr *DriverResult) error {
	by, err := ts.AnsweredBy(s.url)
	if err != nil {
		return err
	}
	canary := map[string]string{"blue": "green", "green": "blue"}[by]
	n := 10000
	if b.o.short {
		n = 1000
	}
	for i, w := range canaryWeights {
		args := []string{"canary", strconv.Itoa(w)}
		switch {
		case i == 0:
			args = []string{"deploy", "--release", "canary", "--canary", strconv.Itoa(w)}
		case w == 100:
			args = []string{"promote"}
		}
		r, nc, ka, err := b.loaded(ctx, s, append([]string{"--json", "--config", s.cfg}, args...)...)
		if err != nil {
			return fmt.Errorf("weight %d: %w", w, err)
		}
		c := ts.CountSlots(s.url, n, 8)
		dr.Canary = append(dr.Canary, CanaryStep{Weight: w, Command: strings.Join(args, " "), WallMs: ms(r.Wall),
			NewConn: nc, KeepAlive: ka, Counted: c.Requests, Failures: c.Failures, Slots: c.Slots, Canary: canary, Share: c.Share(canary)})
	}
	return nil
}

// canaryTable renders figure 8.
func (r *Results) canaryTable(b *strings.Builder) {
	var rows [][]string
	for d, dr := range r.drivers {
		for _, s := range dr.Canary {
			rows = append(rows, []string{d, "`" + s.Command + "`", fmt.Sprintf("%d%%", s.Weight),
				fmt.Sprintf("%.2f%% (%d of %d)", s.Share, s.Slots[s.Canary], s.Counted),
				fmt.Sprintf("%.2f", math.Abs(s.Share-float64(s.Weight))), num(float64(s.Failures)),
				fmt.Sprintf("%d of %d", s.NewConn.Failures, s.NewConn.Requests),
				fmt.Sprintf("%d of %d", s.KeepAlive.Failures, s.KeepAlive.Requests), num(s.WallMs) + " ms"})
		}
	}
	if len(rows) > 0 {
		table(b, "Canary (figure 8): split accuracy after each weight, and the load while it was set", []string{"driver", "command", "weight",
			"canary's share", "off by (points)", "failed (counting)", "failed, new-conn clients", "failed, keep-alive clients", "command wall time"}, rows)
	}
}
