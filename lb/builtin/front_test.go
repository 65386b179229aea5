package builtin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/state"
)

// TestFrontShutdownIsGraceful: when the proxy stops, a request in flight on
// the fast path and one on net/http's path both get their answers, an idle
// kept-alive connection is closed at once, and Run returns after them.
func TestFrontShutdownIsGraceful(t *testing.T) {
	slot := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(300 * time.Millisecond)
		fmt.Fprint(w, r.Method)
	})
	store := &state.Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	if err := store.Save(state.New(slot, slot)); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Service: "app", Listen: freeAddr(t), StatePath: store.Path, BluePort: slot, GreenPort: slot,
		Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	dial := func() (net.Conn, *bufio.Reader) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := net.Dial("tcp", p.Listen)
			if err == nil {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				return c, bufio.NewReader(c)
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	idle, idleR := dial()
	io.WriteString(idle, "GET /warm HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}

	answers := make(chan string, 2)
	for _, req := range []string{
		"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n",
		"POST /slow HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi",
	} {
		c, br := dial()
		defer c.Close()
		io.WriteString(c, req)
		go func() {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				answers <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			answers <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	time.Sleep(100 * time.Millisecond) // both requests are at the slot
	start := time.Now()
	cancel()
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Errorf("the idle connection: %v, want it closed (EOF)", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("the idle connection was closed after %s, before the requests in flight ended", d)
	}
	got := map[string]bool{<-answers: true, <-answers: true}
	if !got["200 GET"] || !got["200 POST"] {
		t.Errorf("answers in flight at shutdown: %v, want 200 GET and 200 POST", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its requests ended")
	}
}
