package metrics

import (
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// BenchmarkWriteTextfile is what a command adds to its run when
// metrics.textfile_dir is set, the load balancer's answer aside: read a
// state file with a full history, gather, write the file atomically (with
// its fsyncs).
func BenchmarkWriteTextfile(b *testing.B) {
	dir := b.TempDir()
	store := &state.Store{Path: filepath.Join(dir, "app.json")}
	st := state.New(5005, 5006)
	for range state.MaxHistory {
		st.Record(state.Event{Action: "deploy", Status: state.StatusSuccess, Release: "v1"})
	}
	if err := store.Save(st); err != nil {
		b.Fatal(err)
	}
	var buckets []lb.Bucket
	for _, le := range []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second, math.MaxInt64} {
		buckets = append(buckets, lb.Bucket{LE: le, Count: 100})
	}
	obs := &fakeObserver{obs: map[config.Color]lb.Observation{
		config.Blue: {Requests: 100, Buckets: buckets}, config.Green: {Requests: 100, Buckets: buckets}}}
	s := Service{Name: "app", State: store.Load, Observer: obs, Slots: slots, Cumulative: true}
	out := b.TempDir()
	for b.Loop() {
		if _, err := WriteTextfile(out, s); err != nil {
			b.Fatal(err)
		}
	}
}
