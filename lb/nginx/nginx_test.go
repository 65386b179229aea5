package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb"
)

// fakeNginx stands in for nginx in unit tests: its "reload" loads the
// generation and colour from the file, an httptest server answers with them,
// and each command's result is scripted.
type fakeNginx struct {
	t    *testing.T
	file string
	srv  *httptest.Server

	mu         sync.Mutex
	calls      []string // "test", "reload"
	generation string   // what the server answers
	slot       string
	testErr    string // non-empty: test fails with this output
	reloadErr  string // non-empty: reload fails with this output
	ignore     bool   // reload "succeeds" but keeps the old configuration
}

var (
	genLine = regexp.MustCompile(`X-Bgd-Generation (\d+)`)
	// the live colour, as the file's first comment names it
	slotLine = regexp.MustCompile(`# Generation \d+: (?:canary split: )?(\w+) \(`)
)

func newFake(t *testing.T) (*fakeNginx, *Balancer) {
	f := &fakeNginx{t: t}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.generation != "" {
			w.Header().Set(GenerationHeader, f.generation)
			w.Header().Set(SlotHeader, f.slot)
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(f.srv.Close)
	cfg := testConfig(t.TempDir())
	cfg.VerifyURL = f.srv.URL + "/"
	f.file = cfg.File
	b, err := New("app", cfg, Options{
		VerifyTimeout:  300 * time.Millisecond,
		VerifyInterval: 5 * time.Millisecond,
		Settle:         20 * time.Millisecond,
		Run:            f.run,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f, b
}

func (f *fakeNginx) run(ctx context.Context, argv []string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if argv[len(argv)-1] == "-t" {
		f.calls = append(f.calls, "test")
		if f.testErr != "" {
			return []byte(f.testErr), errors.New("exit status 1")
		}
		return []byte("nginx: configuration file test is successful\n"), nil
	}
	f.calls = append(f.calls, "reload")
	if f.reloadErr != "" {
		return []byte(f.reloadErr), errors.New("exit status 1")
	}
	if f.ignore {
		return nil, nil
	}
	data, err := os.ReadFile(f.file)
	if err != nil {
		f.generation, f.slot = "", ""
		return nil, nil
	}
	if m := genLine.FindSubmatch(data); m != nil {
		f.generation = string(m[1])
	}
	if m := slotLine.FindSubmatch(data); m != nil {
		f.slot = string(m[1])
	}
	return nil, nil
}

func (f *fakeNginx) callList() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, ",")
}

// TestFlip: the order of steps and what is on disk after each kind of failure.
func TestFlip(t *testing.T) {
	previous := []byte("# the file as it was, byte for byte\r\n\tupstream x { server 127.0.0.1:1; }")
	cases := []struct {
		name      string
		prior     bool // a previous file exists
		setup     func(*fakeNginx)
		wantErr   error
		wantMsg   string
		wantCalls string
	}{
		{name: "first flip creates the file", wantCalls: "test,reload"},
		{name: "flip replaces the file", prior: true, wantCalls: "test,reload"},
		{name: "test rejects: previous restored, nothing reloaded", prior: true,
			setup:   func(f *fakeNginx) { f.testErr = `nginx: [emerg] unknown directive "bogus" in bgd-app.conf:3` },
			wantErr: ErrRejected, wantMsg: `unknown directive "bogus"`, wantCalls: "test"},
		{name: "test rejects the first file: removed again",
			setup:   func(f *fakeNginx) { f.testErr = "nginx: [emerg] bad" },
			wantErr: ErrRejected, wantMsg: "removed again", wantCalls: "test"},
		{name: "no master: previous restored", prior: true,
			setup: func(f *fakeNginx) {
				f.reloadErr = `nginx: [error] open() "/run/nginx.pid" failed (2: No such file or directory)`
			},
			wantErr: lb.ErrUnreachable, wantMsg: "/run/nginx.pid", wantCalls: "test,reload"},
		{name: "reload keeps the old configuration: restored and reloaded again", prior: true,
			setup:   func(f *fakeNginx) { f.ignore = true },
			wantErr: lb.ErrNotConfirmed, wantMsg: "nginx kept its previous configuration", wantCalls: "test,reload,reload"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, b := newFake(t)
			if c.prior {
				if err := os.WriteFile(f.file, previous, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if c.setup != nil {
				c.setup(f)
			}
			r := testRoute("green", 7)
			err := b.Flip(context.Background(), r)
			if got := f.callList(); got != c.wantCalls {
				t.Errorf("commands run: %s; want %s", got, c.wantCalls)
			}
			on, rerr := os.ReadFile(f.file)
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("Flip: %v", err)
				}
				want, _ := b.Render(r)
				if !bytes.Equal(on, want) {
					t.Fatalf("file after flip:\n%s\nwant:\n%s", on, want)
				}
				if fi, _ := os.Stat(f.file); c.prior && fi.Mode().Perm() != 0o640 {
					t.Errorf("mode %v; the previous file's 0640 was not kept", fi.Mode().Perm())
				}
				return
			}
			if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.wantMsg) {
				t.Fatalf("Flip = %v; want %v saying %q", err, c.wantErr, c.wantMsg)
			}
			switch {
			case c.prior && !bytes.Equal(on, previous):
				t.Fatalf("previous file not restored byte for byte: %q (%v)", on, rerr)
			case !c.prior && rerr == nil:
				t.Fatalf("a file that did not exist before is left behind:\n%s", on)
			}
		})
	}
}

// TestFlipCancelled: a flip cancelled while it waits for nginx still puts
// the previous file back.
func TestFlipCancelled(t *testing.T) {
	f, b := newFake(t)
	f.ignore = true
	os.WriteFile(f.file, []byte("before"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := b.Flip(ctx, testRoute("blue", 2))
	if !errors.Is(err, lb.ErrNotConfirmed) || !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Flip = %v", err)
	}
	if on, _ := os.ReadFile(f.file); string(on) != "before" {
		t.Fatalf("file after a cancelled flip: %q", on)
	}
	if got := f.callList(); got != "test,reload,reload" {
		t.Fatalf("commands run: %s", got)
	}
}

// TestFlipIdempotent: flipping again to what nginx already serves runs no
// command at all.
func TestFlipIdempotent(t *testing.T) {
	f, b := newFake(t)
	r := testRoute("blue", 3)
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if err := b.Flip(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if got := f.callList(); got != "test,reload" {
		t.Fatalf("commands run: %s; want one test and one reload", got)
	}
}

// TestSettle: with old workers still answering, a flip is confirmed only
// after Settle has passed since the reload.
func TestSettle(t *testing.T) {
	f, b := newFake(t)
	b.opts.Settle = 100 * time.Millisecond
	start := time.Now()
	if err := b.Flip(context.Background(), testRoute("green", 1)); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("confirmed after %s, before Settle", el)
	}
	_ = f
}

func TestActive(t *testing.T) {
	f, b := newFake(t)
	if _, err := b.Active(context.Background()); err == nil || !strings.Contains(err.Error(), SlotHeader) {
		t.Fatalf("Active without the header = %v; want an error naming %s", err, SlotHeader)
	}
	if err := b.Flip(context.Background(), testRoute("green", 1)); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Active(context.Background()); err != nil || got != "green" {
		t.Fatalf("Active = %q, %v; want green", got, err)
	}
	f.srv.Close()
	if _, err := b.Active(context.Background()); !errors.Is(err, lb.ErrUnreachable) {
		t.Fatalf("Active with nginx down = %v; want lb.ErrUnreachable", err)
	}
}

// TestFlipCancelledInCommand: cancelled while nginx -t or the reload runs,
// the previous file is back; a reload that may have signalled nginx is
// followed by another one with the restored file.
func TestFlipCancelledInCommand(t *testing.T) {
	for _, stuck := range []string{"test", "reload"} {
		t.Run(stuck, func(t *testing.T) {
			f, b := newFake(t)
			os.WriteFile(f.file, []byte("before"), 0o644)
			fake := b.opts.Run
			var calls []string
			b.opts.Run = func(ctx context.Context, argv []string) ([]byte, error) {
				kind := "reload"
				if argv[len(argv)-1] == "-t" {
					kind = "test"
				}
				calls = append(calls, kind)
				if kind == stuck && len(calls) <= 2 {
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return fake(ctx, argv)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			err := b.Flip(ctx, testRoute("green", 2))
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "cancelled") {
				t.Fatalf("Flip = %v; want a cancellation error", err)
			}
			if on, _ := os.ReadFile(f.file); string(on) != "before" {
				t.Fatalf("file after a cancelled flip: %q", on)
			}
			want := map[string]string{"test": "test", "reload": "test,reload,reload"}[stuck]
			if got := strings.Join(calls, ","); got != want {
				t.Fatalf("commands run: %s; want %s", got, want)
			}
		})
	}
}
