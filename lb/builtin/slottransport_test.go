package builtin

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
)

// TestProxyResendsAGETWhenTheSlotClosedItsConnection: a slot that closes
// its idle connections (a Go server's IdleTimeout, a restart) costs the
// next GET nothing: the proxy finds its kept connection closed before any
// answer and sends the request again on a new one.
func TestProxyResendsAGETWhenTheSlotClosedItsConnection(t *testing.T) {
	var opened atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "blue")
	}))
	srv.Config.IdleTimeout = 20 * time.Millisecond
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	p, _, _ := startProxy(t, srv.Listener.Addr().(*net.TCPAddr).Port, backend(t, "green", nil))
	for i := range 3 {
		if code, body := get(t, p.Listen, "/"); code != http.StatusOK || body != "blue" {
			t.Fatalf("request %d after the slot closed the idle connection: %d %q", i, code, body)
		}
		time.Sleep(100 * time.Millisecond) // the slot closes the proxy's connection
	}
	if n := opened.Load(); n != 3 {
		t.Errorf("the slot saw %d connections for 3 requests 100 ms apart, want 3 (one each)", n)
	}
}

// TestProxyKeepsOneConnectionForSequentialGETs: GET and HEAD answers read
// to their end leave the connection to the slot open for the next request,
// a HEAD's Content-Length reaches the client, and a slot's
// "Connection: close" is obeyed.
func TestProxyKeepsOneConnectionForSequentialGETs(t *testing.T) {
	c := countingSlot(t, config.Blue)
	p, _, _ := startProxy(t, c.port, backend(t, "green", nil))
	for range 20 {
		if code, body := get(t, p.Listen, "/"); code != http.StatusOK || body != "demo app: color=blue" {
			t.Fatalf("GET: %d %q", code, body)
		}
		resp, err := http.Head("http://" + p.Listen + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len("demo app: color=blue")) {
			t.Fatalf("HEAD: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
		}
	}
	if n := c.opened.Load(); n != 1 {
		t.Errorf("40 sequential requests opened %d connections to the slot, want 1", n)
	}

	var opened atomic.Int32
	closing := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "blue")
	}))
	closing.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	closing.Start()
	t.Cleanup(closing.Close)
	p2, _, _ := startProxy(t, closing.Listener.Addr().(*net.TCPAddr).Port, backend(t, "green", nil))
	for range 3 {
		if code, body := get(t, p2.Listen, "/"); code != http.StatusOK || body != "blue" {
			t.Fatalf("GET from a slot that closes: %d %q", code, body)
		}
	}
	if n := opened.Load(); n != 3 {
		t.Errorf("a slot answering Connection: close saw %d connections for 3 requests, want 3", n)
	}
}

// TestProxyClosesTheSlotConnectionWhenTheClientLeaves: a client that hangs
// up in the middle of a streamed answer ends the proxy's request to the
// slot (the slot's request context ends) and its in-flight count.
func TestProxyClosesTheSlotConnectionWhenTheClientLeaves(t *testing.T) {
	ended := make(chan struct{})
	slot := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first chunk\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(ended)
	})
	p, _, _ := startProxy(t, slot, backend(t, "green", nil))
	c, err := net.Dial("tcp", p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: app\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first chunk\n" {
		t.Fatalf("first chunk: %q, %v", line, err)
	}
	if n := p.inFlight[colorIndex(config.Blue)].Load(); n != 1 {
		t.Fatalf("in flight while streaming: %d, want 1", n)
	}
	c.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the client left, but the proxy's request to the slot goes on")
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.inFlight[colorIndex(config.Blue)].Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight after the client left: %d, want 0", p.inFlight[colorIndex(config.Blue)].Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProxyForwardsEarlyHints: a slot's 103 Early Hints reach the client
// before the final answer, with their Link header.
func TestProxyForwardsEarlyHints(t *testing.T) {
	slot := backend(t, "blue", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		fmt.Fprint(w, "blue")
	})
	p, _, _ := startProxy(t, slot, backend(t, "green", nil))
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, "http://"+p.Listen+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "blue" {
		t.Fatalf("final answer: %d %q", resp.StatusCode, body)
	}
	if got := strings.Join(hints, ","); got != "103 </app.css>; rel=preload" {
		t.Errorf("1xx answers seen by the client: %q, want one 103 with its Link", got)
	}
}
