package loadreport

import (
	"testing"
	"time"
)

func ms(n int64) int64 { return n * int64(time.Millisecond) }

func TestFoldAndAfter(t *testing.T) {
	at := time.Unix(0, ms(1000))
	r := Fold([]Sample{
		{Start: ms(1010), End: ms(1011), Err: "refused"}, // out of order: Fold sorts
		{Start: ms(900), End: ms(901), Err: "early"},     // before the kill
		{Start: ms(950), End: ms(951)},
		{Start: ms(1020), End: ms(1021), Err: "502"},
		{Start: ms(1300), End: ms(1302)},
		{Start: ms(1305), End: ms(1306), Err: "reset"},
		{Start: ms(1310), End: ms(1315)},
	})
	if r.Sent != 7 || r.Failed != 4 || len(r.Outages) != 3 {
		t.Fatalf("Fold: %+v", r)
	}
	if o := r.Outages[1]; o.FirstFail != ms(1010) || o.Recovered != ms(1302) || o.Failed != 2 || o.Error != "refused" {
		t.Fatalf("second outage: %+v", o)
	}
	if d, n := r.After(at); d != 315*time.Millisecond || n != 3 {
		t.Fatalf("After: %s, %d failed; want 315ms, 3", d, n)
	}
	if d, n := r.After(time.Unix(0, ms(2000))); d != 0 || n != 0 {
		t.Fatalf("After a quiet moment: %s, %d", d, n)
	}
	// A request in flight at the kill started before it and failed.
	if d, n := r.After(time.Unix(0, ms(1015))); d != 300*time.Millisecond || n != 3 {
		t.Fatalf("After, with an outage begun before: %s, %d failed; want 300ms, 3", d, n)
	}
	unended := Fold([]Sample{{Start: ms(1100), End: ms(1101), Err: "refused"}})
	if d, n := unended.After(at); d != -1 || n != 1 || unended.Outages[0].Recovered != 0 {
		t.Fatalf("an outage to the end: %s, %d, %+v", d, n, unended)
	}
	if got := r.Describe(at); got != "[-100ms .. -49ms: 1 failed, early] [10ms .. 302ms: 2 failed, refused] [305ms .. 315ms: 1 failed, reset]" {
		t.Fatalf("Describe: %s", got)
	}
}
