package builtin

// HTTP/1 conformance of the proxy's front end (the server side that accepts
// client connections), all through startProxy: the real listener, real TCP
// and a real slot. Whatever serves the client connections must pass these.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawClient is a raw client connection to the proxy.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dialFront opens a raw connection to addr, closed when the test ends; every
// read and write on it fails after 10 s.
func dialFront(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (f *rawClient) send(s string) {
	f.t.Helper()
	if _, err := io.WriteString(f.c, s); err != nil {
		f.t.Fatalf("writing %q: %v", s, err)
	}
}

// read reads one answer to a request of method and its whole body.
func (f *rawClient) read(method string) (*http.Response, string) {
	f.t.Helper()
	resp, err := http.ReadResponse(f.br, &http.Request{Method: method})
	if err != nil {
		f.t.Fatalf("reading the answer to a %s: %v", method, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		f.t.Fatalf("reading the body of a %s answer (%d): %v", method, resp.StatusCode, err)
	}
	return resp, string(body)
}

// closed asserts that the proxy closes the connection with nothing more to
// say (an end of stream or a reset, not a timeout).
func (f *rawClient) closed() {
	f.t.Helper()
	f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(f.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		f.t.Fatalf("the proxy kept the connection open (5 s); read %q", rest)
	}
	if len(rest) > 0 {
		f.t.Fatalf("after the answer the proxy sent %q before closing", rest)
	}
}

// frontSlot starts a proxy in front of h (blue, active); green is a plain
// backend that is never routed to.
func frontSlot(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	p, _, _ := startProxy(t, backend(t, "blue", h), backend(t, "green", nil))
	return p.Listen
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// body8M is 8 MiB that are not all alike.
var body8M = sync.OnceValue(func() []byte {
	b := make([]byte, 8<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>13)
	}
	return b
})

// 1. A streamed answer reaches the client as the slot flushes it: the first
// line arrives while the slot still waits.
func TestFrontStreamsWithoutBuffering(t *testing.T) {
	release := make(chan struct{})
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first line\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "the rest\n")
	})
	f := dialFront(t, addr)
	f.send("GET /stream HTTP/1.1\r\nHost: app\r\n\r\n")
	resp, err := http.ReadResponse(f.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first line\n" {
		t.Fatalf("first line while the slot waits: %q, %v", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "the rest\n" {
		t.Fatalf("the rest: %q, %v", rest, err)
	}
}

// 2. An upgrade (101 Switching Protocols) turns the connection into a byte
// pipe between client and slot, both ways.
func TestFrontUpgradeEchoesBothWays(t *testing.T) {
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" || !connectionNames(r.Header, "Upgrade") {
			http.Error(w, "no upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	f := dialFront(t, addr)
	f.send("GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(f.br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "echo" {
		t.Fatalf("upgrade answered %d, Upgrade %q; want 101 echo", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	for _, msg := range []string{"ping", "second message, longer"} {
		f.send(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(f.br, got); err != nil || string(got) != msg {
			t.Fatalf("sent %q through the upgraded connection, got back %q, %v", msg, got, err)
		}
	}
}

// 3. Trailers the slot announces and sets after the body reach the client.
func TestFrontResponseTrailers(t *testing.T) {
	const body = "a body whose sum comes last"
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, body)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", sha([]byte(body)))
	})
	resp, err := http.Get("http://" + addr + "/t")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != body {
		t.Fatalf("body %q, %v", got, err)
	}
	if s := resp.Trailer.Get("X-Sum"); s != sha([]byte(body)) {
		t.Fatalf("trailer X-Sum %q, want %q (trailers %v)", s, sha([]byte(body)), resp.Trailer)
	}
}

// sumSlot answers "<length> <sha256>" of the request body it got.
func sumSlot(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d %s", len(b), sha(b))
}

// 4a. A chunked request body of 8 MiB reaches the slot intact.
func TestFrontChunkedRequestBody(t *testing.T) {
	addr := frontSlot(t, sumSlot)
	data := body8M()
	// A reader of unknown length: the client sends it chunked.
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/up", io.MultiReader(bytes.NewReader(data)))
	if req.ContentLength != 0 {
		t.Fatalf("the request would not be chunked (ContentLength %d)", req.ContentLength)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if want := fmt.Sprintf("%d %s", len(data), sha(data)); resp.StatusCode != http.StatusOK || string(got) != want {
		t.Fatalf("chunked 8 MiB: %d %q, want 200 %q", resp.StatusCode, got, want)
	}
}

// 4b. A Content-Length request body of 8 MiB reaches the slot intact.
func TestFrontContentLengthRequestBody(t *testing.T) {
	addr := frontSlot(t, sumSlot)
	data := body8M()
	resp, err := http.Post("http://"+addr+"/up", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if want := fmt.Sprintf("%d %s", len(data), sha(data)); resp.StatusCode != http.StatusOK || string(got) != want {
		t.Fatalf("Content-Length 8 MiB: %d %q, want 200 %q", resp.StatusCode, got, want)
	}
}

// 4c. A hand-framed chunked body (odd chunk sizes, a chunk extension, upper
// case hex) arrives as its data.
func TestFrontRawChunkedRequestBody(t *testing.T) {
	addr := frontSlot(t, sumSlot)
	f := dialFront(t, addr)
	f.send("POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n")
	resp, body := f.read(http.MethodPost)
	want := "hello 0123456789"
	if exp := fmt.Sprintf("%d %s", len(want), sha([]byte(want))); resp.StatusCode != http.StatusOK || body != exp {
		t.Fatalf("chunked body: %d %q, want 200 %q", resp.StatusCode, body, exp)
	}
}

// 5. Expect: 100-continue: the client gets 100 Continue before it sends the
// body (it must come: the client waits for it), then the final answer.
func TestFrontExpectContinue(t *testing.T) {
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprint(w, len(b))
	})
	const body = "the body that waited for its 100 Continue"
	f := dialFront(t, addr)
	f.send("POST /expect HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(f.br, &http.Request{Method: http.MethodPost})
	if err != nil {
		t.Fatalf("no 100 Continue before the body was sent: %v", err)
	}
	if resp.StatusCode != http.StatusContinue || resp.Proto != "HTTP/1.1" {
		t.Fatalf("interim answer %s %d, want HTTP/1.1 100", resp.Proto, resp.StatusCode)
	}
	f.send(body)
	// More 100s may follow (today the slot's own 100 Continue is forwarded
	// after the proxy's: two in all); a client must take them.
	resp, got := f.read(http.MethodPost)
	for resp.StatusCode == http.StatusContinue {
		resp, got = f.read(http.MethodPost)
	}
	if resp.StatusCode != http.StatusOK || got != strconv.Itoa(len(body)) {
		t.Fatalf("final answer %d %q, want 200 %q", resp.StatusCode, got, strconv.Itoa(len(body)))
	}
}

// pathSlot answers the request's method and path.
func pathSlot(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, r.Method+" "+r.URL.Path)
}

// 6. Pipelined requests written at once are answered in order.
func TestFrontPipelinedRequestsAnswerInOrder(t *testing.T) {
	addr := frontSlot(t, pathSlot)
	f := dialFront(t, addr)
	f.send("GET /one HTTP/1.1\r\nHost: app\r\n\r\nGET /two HTTP/1.1\r\nHost: app\r\n\r\n")
	for _, want := range []string{"GET /one", "GET /two"} {
		if resp, body := f.read(http.MethodGet); resp.StatusCode != http.StatusOK || body != want {
			t.Fatalf("pipelined answer %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

// 7. HEAD answers carry the Content-Length and no body; 204 and 304 carry no
// body; the connection carries the next request after each.
func TestFrontBodilessAnswers(t *testing.T) {
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		}
	})
	f := dialFront(t, addr)
	f.send("HEAD /page HTTP/1.1\r\nHost: app\r\n\r\n")
	resp, body := f.read(http.MethodHead)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != "11" || body != "" {
		t.Fatalf("HEAD: %d Content-Length %q body %q; want 200, 11, none", resp.StatusCode, resp.Header.Get("Content-Length"), body)
	}
	for _, tc := range []struct {
		path string
		code int
	}{{"/204", 204}, {"/304", 304}} {
		f.send("GET " + tc.path + " HTTP/1.1\r\nHost: app\r\n\r\n")
		resp, body := f.read(http.MethodGet)
		if resp.StatusCode != tc.code || body != "" || len(resp.TransferEncoding) > 0 {
			t.Fatalf("%s: %d %q (Transfer-Encoding %q), want %d without a body", tc.path, resp.StatusCode, body, resp.TransferEncoding, tc.code)
		}
		if tc.code == 304 && resp.Header.Get("ETag") != `"v1"` {
			t.Errorf("304 lost its ETag: %q", resp.Header.Get("ETag"))
		}
	}
	// Any stray body byte of the answers above would garble this one.
	f.send("GET /page HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, body := f.read(http.MethodGet); resp.StatusCode != http.StatusOK || body != "hello world" {
		t.Fatalf("GET after HEAD, 204 and 304 on the same connection: %d %q", resp.StatusCode, body)
	}
}

// 8. A slot answer delimited by the end of its connection (neither
// Content-Length nor chunked) reaches the client whole.
func TestFrontSlotAnswerDelimitedByClose(t *testing.T) {
	want := "body" + strings.Repeat("0123456789abcdef", 8<<10)
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\n\r\n" + want)
		brw.Flush()
	})
	resp, err := http.Get("http://" + addr + "/eof")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(got) != want {
		t.Fatalf("close-delimited answer: %d, %d bytes (want %d), %v", resp.StatusCode, len(got), len(want), err)
	}
	// The same over raw HTTP/1.1: framed for the client (chunked or close).
	f := dialFront(t, addr)
	f.send("GET /eof HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, body := f.read(http.MethodGet); resp.StatusCode != http.StatusOK || body != want {
		t.Fatalf("raw client: %d, %d bytes, want %d", resp.StatusCode, len(body), len(want))
	}
}

// 9a. A client's Connection: close gets its answer, then the proxy closes.
func TestFrontClientConnectionClose(t *testing.T) {
	addr := frontSlot(t, pathSlot)
	f := dialFront(t, addr)
	f.send("GET /bye HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
	resp, body := f.read(http.MethodGet)
	if resp.StatusCode != http.StatusOK || body != "GET /bye" || !resp.Close {
		t.Fatalf("Connection: close: %d %q close=%v, want 200 with Connection: close", resp.StatusCode, body, resp.Close)
	}
	f.closed()
}

// 9b. An HTTP/1.0 client without keep-alive gets its answer (not chunked,
// even when the slot streams it) and a close.
func TestFrontHTTP10ClientGetsClose(t *testing.T) {
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "streamed ")
		w.(http.Flusher).Flush() // no Content-Length
		io.WriteString(w, r.Proto)
	})
	f := dialFront(t, addr)
	f.send("GET /old HTTP/1.0\r\nHost: app\r\n\r\n")
	resp, body := f.read(http.MethodGet)
	if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) > 0 || !strings.HasPrefix(body, "streamed HTTP/1.") {
		t.Fatalf("HTTP/1.0 client: %d Transfer-Encoding %q body %q", resp.StatusCode, resp.TransferEncoding, body)
	}
	f.closed()
}

// 10. One client connection carries 100 requests in a row.
func TestFrontKeepAlive100Requests(t *testing.T) {
	addr := frontSlot(t, pathSlot)
	f := dialFront(t, addr)
	for i := range 100 {
		f.send(fmt.Sprintf("GET /n/%d HTTP/1.1\r\nHost: app\r\n\r\n", i))
		resp, body := f.read(http.MethodGet)
		if want := fmt.Sprintf("GET /n/%d", i); resp.StatusCode != http.StatusOK || body != want || resp.Close {
			t.Fatalf("request %d on the kept connection: %d %q close=%v, want 200 %q", i, resp.StatusCode, body, resp.Close, want)
		}
	}
}

// seenPaths is a slot that counts the requests it gets and the paths it saw.
type seenPaths struct {
	mu    sync.Mutex
	n     atomic.Int32
	paths []string
}

func (s *seenPaths) handler(w http.ResponseWriter, r *http.Request) {
	s.n.Add(1)
	s.mu.Lock()
	s.paths = append(s.paths, r.URL.Path)
	s.mu.Unlock()
	b, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %d", r.URL.Path, len(b))
}

func (s *seenPaths) saw(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.paths {
		if strings.Contains(p, path) {
			return true
		}
	}
	return false
}

// 11. Malformed requests are refused (with the connection closed) and never
// reach the slot.
func TestFrontRefusesMalformedRequests(t *testing.T) {
	seen := &seenPaths{}
	addr := frontSlot(t, seen.handler)
	for _, tc := range []struct {
		name, req string
		code      int
	}{
		{"space in header name", "GET /x HTTP/1.1\r\nHost: app\r\nX A: a\r\n\r\n", 400},
		{"space before colon", "GET /x HTTP/1.1\r\nHost: app\r\nX-A : a\r\n\r\n", 400},
		{"two Content-Lengths", "POST /x HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400},
		{"signed Content-Length", "POST /x HTTP/1.1\r\nHost: app\r\nContent-Length: +4\r\n\r\nabcd", 400},
		{"bare LF in header value", "GET /x HTTP/1.1\r\nHost: app\r\nX-A: a\nb\r\n\r\n", 400},
		{"bare CR in header value", "GET /x HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n", 400},
		{"NUL in header value", "GET /x HTTP/1.1\r\nHost: app\r\nX-A: a\x00b\r\n\r\n", 400},
		{"garbage request line", "GARBAGE\r\n\r\n", 400},
		{"bad version", "GET /x HTTP/1.1x\r\nHost: app\r\n\r\n", 400},
		{"no Host", "GET /x HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"unknown transfer coding", "POST /x HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501},
		{"chunked twice", "POST /x HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501},
		{"HTTP/2.0 request line", "GET /x HTTP/2.0\r\nHost: app\r\n\r\n", 505},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := dialFront(t, addr)
			f.send(tc.req)
			resp, body := f.read(http.MethodGet)
			if resp.StatusCode != tc.code {
				t.Fatalf("%q answered %d %q, want %d", tc.req, resp.StatusCode, body, tc.code)
			}
			f.closed()
		})
	}
	if n := seen.n.Load(); n != 0 {
		t.Fatalf("malformed requests reached the slot %d times: %q", n, seen.paths)
	}
}

// 11b. A request with both Content-Length and Transfer-Encoding: chunked,
// whose chunk data is a second request that a Content-Length reader would
// take for the next one: the slot never sees the smuggled request. (Refused,
// or framed by its Transfer-Encoding alone, the smuggled bytes being body.)
func TestFrontSmuggledRequestInChunkedBody(t *testing.T) {
	seen := &seenPaths{}
	addr := frontSlot(t, seen.handler)
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n"
	f := dialFront(t, addr)
	f.send("POST /front HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled))
	resp, body := f.read(http.MethodPost)
	switch resp.StatusCode {
	case http.StatusBadRequest:
		if n := seen.n.Load(); n != 0 {
			t.Fatalf("refused with 400, yet the slot got %d requests: %q", n, seen.paths)
		}
	case http.StatusOK:
		if want := fmt.Sprintf("/front %d", len(smuggled)); body != want {
			t.Fatalf("framed by Transfer-Encoding, the slot should answer %q, got %q", want, body)
		}
	default:
		t.Fatalf("CL+TE request answered %d %q, want 400 or 200", resp.StatusCode, body)
	}
	// Whatever else comes on this connection, give the proxy time to forward
	// anything it wrongly parsed, then look.
	f.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	io.Copy(io.Discard, f.br)
	if seen.saw("/smuggled") {
		t.Fatalf("the smuggled request reached the slot: %q", seen.paths)
	}
}

// 12. A request head beyond the proxy's limit is refused with 431 and not
// forwarded. (The limit today is net/http's 1 MiB; heads of 64 KiB to 1 MiB
// are forwarded.)
func TestFrontRefusesHugeRequestHead(t *testing.T) {
	seen := &seenPaths{}
	addr := frontSlot(t, seen.handler)
	f := dialFront(t, addr)
	go io.WriteString(f.c, "GET /huge HTTP/1.1\r\nHost: app\r\nX-Big: "+strings.Repeat("a", 1100<<10)+"\r\n\r\n")
	resp, body := f.read(http.MethodGet)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("1.1 MiB head: %d %q, want 431", resp.StatusCode, body)
	}
	if n := seen.n.Load(); n != 0 {
		t.Fatalf("the huge head reached the slot %d times", n)
	}
}

// 13. Header names in any case, repeated headers and repeated Set-Cookie
// lines cross the proxy.
func TestFrontHeaderCaseAndRepeats(t *testing.T) {
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "a=1; Path=/")
		w.Header().Add("Set-Cookie", "b=2; Path=/")
		w.Header().Add("Set-Cookie", "c=3, d=4; Path=/")
		fmt.Fprintf(w, "%s|%s", r.Header.Get("X-Custom-Thing"), strings.Join(r.Header.Values("X-Multi"), ","))
	})
	f := dialFront(t, addr)
	f.send("GET /h HTTP/1.1\r\nHost: app\r\nx-custom-thing: v\r\nX-Multi: one\r\nx-multi: two\r\nX-MULTI: three\r\n\r\n")
	resp, body := f.read(http.MethodGet)
	if resp.StatusCode != http.StatusOK || body != "v|one,two,three" {
		t.Fatalf("slot saw %q (%d), want %q", body, resp.StatusCode, "v|one,two,three")
	}
	if got := resp.Header.Values("Set-Cookie"); strings.Join(got, "\n") != "a=1; Path=/\nb=2; Path=/\nc=3, d=4; Path=/" {
		t.Fatalf("client got Set-Cookie lines %q, want the slot's three in order", got)
	}
}

// 14. The request target reaches the slot as sent: percent-encoding, an
// encoded slash and the query untouched.
func TestFrontRequestTargetAsSent(t *testing.T) {
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RequestURI) })
	for _, target := range []string{"/a%2Fb?x=%20y", "/%7Euser/a%20b?q=a+b&r=%2F%3F&r=2", "/p;m=1?", "/caf%C3%A9/x%2fy"} {
		f := dialFront(t, addr)
		f.send("GET " + target + " HTTP/1.1\r\nHost: app\r\n\r\n")
		if resp, body := f.read(http.MethodGet); resp.StatusCode != http.StatusOK || body != target {
			t.Errorf("sent %q, the slot saw %q (%d)", target, body, resp.StatusCode)
		}
	}
}

// 15. A client that leaves before the slot answered ends the slot's request
// (its context), for a GET and for a POST with a body.
func TestFrontClientLeavesBeforeAnswer(t *testing.T) {
	got := make(chan struct{}, 1)
	ended := make(chan struct{}, 1)
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		got <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- struct{}{}
		case <-time.After(20 * time.Second):
		}
	})
	for _, req := range []string{
		"GET /wait HTTP/1.1\r\nHost: app\r\n\r\n",
		"POST /wait HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello",
	} {
		f := dialFront(t, addr)
		f.send(req)
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("%q never reached the slot", req)
		}
		f.c.Close()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: the client left, but the slot's request goes on", req)
		}
	}
}

// 16. A slot that dies in the middle of its body never gives the client a
// complete-looking answer: the client's read of the body fails.
func TestFrontSlotCutsBodyShort(t *testing.T) {
	addr := frontSlot(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		if r.URL.Path == "/chunked" {
			brw.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
		} else {
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
		}
		brw.Flush()
	})
	for _, path := range []string{"/length", "/chunked"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			continue // no answer at all is no complete-looking answer either
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("%s: the client read a complete-looking answer %d %q", path, resp.StatusCode, body)
		}
		if len(body) >= 1000 {
			t.Errorf("%s: %d bytes from a slot that sent 10", path, len(body))
		}
	}
}
