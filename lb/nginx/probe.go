package nginx

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// answer is what one probe of verify_url saw.
type answer struct {
	status     int
	generation string // the generation header, "" when absent
	slot       string // the slot header
	active     string // the active header ("" unless the route splits)
	err        error  // no answer at all
}

func (a answer) String() string {
	switch {
	case a.err != nil:
		return a.err.Error()
	case a.generation == "":
		return fmt.Sprintf("status %d without a %s header", a.status, GenerationHeader)
	default:
		if a.active != "" {
			return fmt.Sprintf("status %d, generation %s, slot %q, active %q", a.status, a.generation, a.slot, a.active)
		}
		return fmt.Sprintf("status %d, generation %s, slot %q", a.status, a.generation, a.slot)
	}
}

// probe asks verify_url once, bounded by ProbeTimeout. The body is drained
// (at most 64 KiB) and discarded: only the headers matter.
func (b *Balancer) probe(ctx context.Context) answer {
	ctx, cancel := context.WithTimeout(ctx, b.opts.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.VerifyURL, nil)
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("User-Agent", "bgd-nginx-verify")
	resp, err := b.opts.Client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return answer{
		status:     resp.StatusCode,
		generation: resp.Header.Get(GenerationHeader),
		slot:       resp.Header.Get(SlotHeader),
		active:     resp.Header.Get(ActiveHeader),
	}
}

// waitGeneration probes until nginx answers with generation want
// Confirmations times in a row, the last at least Settle after reloaded: for
// a while after a reload the old workers still accept new connections, and
// under load some of them for longer than nginx's 100 ms. It returns the last
// answer seen; the error says why it gave up.
func (b *Balancer) waitGeneration(parent context.Context, want string, reloaded time.Time) (answer, error) {
	ctx, cancel := context.WithTimeout(parent, b.opts.VerifyTimeout)
	defer cancel()
	var last answer
	streak := 0
	for {
		ans := b.probe(ctx)
		if ans.err == nil || ctx.Err() == nil || last == (answer{}) {
			last = ans // a probe cut short by the deadline says nothing new
		}
		if last.generation == want {
			streak++
		} else {
			streak = 0
		}
		if streak >= b.opts.Confirmations && time.Since(reloaded) >= b.opts.Settle {
			return last, nil
		}
		t := time.NewTimer(b.opts.VerifyInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			if err := parent.Err(); err != nil {
				return last, err
			}
			return last, fmt.Errorf("gave up after %s", b.opts.VerifyTimeout)
		case <-t.C:
		}
	}
}
