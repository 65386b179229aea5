package etcdstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bgd-dev/bgd/internal/testsupport"
	"github.com/bgd-dev/bgd/state"
)

// TestMain lets the test binary act as a second bgd process on another
// host: BGD_ETCDSTORE_HELPER selects what the child does.
func TestMain(m *testing.M) {
	switch os.Getenv("BGD_ETCDSTORE_HELPER") {
	case "":
		os.Exit(m.Run())
	case "hold-lock":
		// Take the lock, say so, then hold it until killed.
		c, err := Dial(Options{Endpoints: []string{os.Getenv("BGD_ETCD_ENDPOINT")}, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		ttl, _ := time.ParseDuration(os.Getenv("BGD_LEASE_TTL"))
		s := &Store{Client: c, Service: "app", Host: "lb-other", LeaseTTL: ttl}
		if _, err := s.Lock(context.Background(), "deploy --release r42", 0); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		for {
			time.Sleep(time.Hour)
		}
	}
	os.Exit(3)
}

// dial is a client of e, closed at the end of the test.
func dial(t *testing.T, e *testsupport.Etcd) *clientv3.Client {
	t.Helper()
	c, err := Dial(Options{Endpoints: []string{e.Endpoint}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// store is the state of service "app" in e, reached by a client of its own.
func store(t *testing.T, e *testsupport.Etcd, host string) *Store {
	t.Helper()
	return &Store{Client: dial(t, e), Service: "app", BluePort: 7101, GreenPort: 7102, Host: host, LeaseTTL: time.Second, Timeout: time.Second}
}

// raw is the value of key as etcd holds it ("" when absent).
func raw(t *testing.T, s *Store, key string) string {
	t.Helper()
	resp, err := s.Client.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// TestLoadMissing: a service nothing ran for yet has the new state, and
// loading it writes nothing.
func TestLoadMissing(t *testing.T) {
	e := testsupport.StartEtcd(t)
	s := store(t, e, "app1")
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if want := state.New(7101, 7102); !reflect.DeepEqual(st, want) {
		t.Errorf("Load of a missing key = %+v, want %+v", st, want)
	}
	if v := raw(t, s, "/bgd/app/state"); v != "" {
		t.Errorf("Load wrote %q", v)
	}
}

// TestSaveLoadRoundTrip: the etcd value is byte for byte what the file
// backend writes (the state package's golden file), and loads back equal,
// under the configured prefix.
func TestSaveLoadRoundTrip(t *testing.T) {
	e := testsupport.StartEtcd(t)
	golden, err := os.ReadFile(filepath.Join("..", "testdata", "full_state.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Decode(golden)
	if err != nil {
		t.Fatal(err)
	}
	file := &state.Store{Path: filepath.Join(t.TempDir(), "app.json")}
	if err := file.Save(st); err != nil {
		t.Fatal(err)
	}
	fileBytes, _ := os.ReadFile(file.Path)
	if !bytes.Equal(fileBytes, golden) {
		t.Fatal("the file backend no longer writes testdata/full_state.json as it is: compare against its new encoding")
	}

	s := store(t, e, "app1")
	s.Prefix = "/prod/bgd/"
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	if got := raw(t, s, "/prod/bgd/app/state"); got != string(golden) {
		t.Errorf("etcd value differs from the state file's encoding:\n got %s\nwant %s", got, golden)
	}
	other := store(t, e, "app2")
	other.Prefix = "/prod/bgd"
	back, err := other.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Errorf("loaded back %+v, want %+v", back, st)
	}
	// A second save of the same Store follows its own revision.
	st.Generation++
	if err := s.Save(st); err != nil {
		t.Fatalf("second Save of the same Store: %v", err)
	}
}

// TestSaveConflict: a Store whose state another wrote since it loaded saves
// nothing, and says so; loading again lets it save.
func TestSaveConflict(t *testing.T) {
	e := testsupport.StartEtcd(t)
	a, b := store(t, e, "app1"), store(t, e, "app2")
	stA, err := a.Load()
	if err != nil {
		t.Fatal(err)
	}
	stB, err := b.Load()
	if err != nil {
		t.Fatal(err)
	}
	stA.ActiveVersion = "green"
	stA.Generation = 1
	stA.InProgress = &state.Operation{Command: "switch green", PID: 4242, Started: state.Now()}
	if err := a.Save(stA); err != nil {
		t.Fatal(err)
	}
	saved := raw(t, a, "/bgd/app/state")

	stB.Generation = 99
	err = b.Save(stB)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Save after another saved = %v, want ErrConflict", err)
	}
	for _, w := range []string{"/bgd/app/state", "was absent", "generation 1", "switch green (pid 4242) in progress", "nothing was saved"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("conflict message %q does not say %q", err, w)
		}
	}
	if got := raw(t, a, "/bgd/app/state"); got != saved {
		t.Errorf("the conflicting Save changed the value to %s", got)
	}

	// A Store that never loaded may not overwrite an existing state.
	fresh := store(t, e, "app3")
	if err := fresh.Save(state.New(1, 2)); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "not loaded by this bgd") {
		t.Errorf("Save without Load over an existing state = %v, want ErrConflict saying it was not loaded", err)
	}

	// Loaded again, b saves; a's revision is now the stale one.
	stB, err = b.Load()
	if err != nil {
		t.Fatal(err)
	}
	stB.Generation = 2
	if err := b.Save(stB); err != nil {
		t.Fatalf("Save after a fresh Load: %v", err)
	}
	if err := a.Save(stA); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "was at revision") {
		t.Errorf("stale Save = %v, want ErrConflict naming the revision it had", err)
	}
}

// TestLoadCorrupt: a value that does not decode is ErrCorrupt and stays as
// it is; a Save that rebuilds the state (reconcile) replaces it.
func TestLoadCorrupt(t *testing.T) {
	e := testsupport.StartEtcd(t)
	s := store(t, e, "app1")
	bad := `{"active_version": "purple"}`
	if _, err := s.Client.Put(context.Background(), "/bgd/app/state", bad); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load()
	if !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), "/bgd/app/state") || !strings.Contains(err.Error(), "bgd reconcile") {
		t.Fatalf("Load of a corrupt value = %v, want ErrCorrupt naming the key and bgd reconcile", err)
	}
	if got := raw(t, s, "/bgd/app/state"); got != bad {
		t.Errorf("Load changed the corrupt value to %q", got)
	}
	if err := s.Save(state.New(7101, 7102)); err != nil {
		t.Fatalf("Save of a rebuilt state over the corrupt one: %v", err)
	}
	if _, err := s.Load(); err != nil {
		t.Errorf("Load after the rebuild: %v", err)
	}
}

// TestLockBusy: a second Lock with timeout 0 fails at once naming the
// holder's host, pid and command; Unlock (twice) frees the lock and leaves
// no key behind.
func TestLockBusy(t *testing.T) {
	e := testsupport.StartEtcd(t)
	a, b := store(t, e, "app1"), store(t, e, "app2")
	a.LeaseTTL = 2 * time.Second
	ctx := context.Background()
	l, err := a.Lock(ctx, "deploy --release v2", 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Lock(ctx, "switch green", 0)
	took := time.Since(start)
	var le *state.LockedError
	if !errors.As(err, &le) || !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second Lock = %v, want a *state.LockedError", err)
	}
	if le.Host != "app1" || le.PID != os.Getpid() || le.Command != "deploy --release v2" || le.Path != "etcd key /bgd/app/lock" {
		t.Errorf("LockedError = %+v, want host app1, pid %d, deploy --release v2, etcd key /bgd/app/lock", le, os.Getpid())
	}
	want := fmt.Sprintf("etcd key /bgd/app/lock is locked by pid %d (deploy --release v2) on host app1", os.Getpid())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
	if took > 500*time.Millisecond {
		t.Errorf("Lock with timeout 0 took %s, want an immediate failure", took)
	}
	// Held past its lease's TTL, the lock lives on its renewals.
	select {
	case <-l.Lost():
		t.Errorf("Lost was closed while the lock was held with etcd up (lease TTL %s)", a.LeaseTTL)
	case <-time.After(a.LeaseTTL + 500*time.Millisecond):
	}
	if _, err := b.Lock(ctx, "switch green", 0); !errors.Is(err, state.ErrLocked) {
		t.Errorf("Lock past the holder's lease TTL = %v, want ErrLocked: the lease was not renewed", err)
	}
	l.RemoveStaleTemps()
	l.Unlock()
	l.Unlock()
	resp, err := a.Client.Get(ctx, "/bgd/app/lock", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		t.Errorf("key %s left after Unlock", kv.Key)
	}
	l2, err := b.Lock(ctx, "switch green", 0)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	l2.Unlock()
	select {
	case <-l.Lost():
		t.Error("Lost is closed after a plain Unlock")
	default:
	}
}

// TestLockWait: a Lock with a timeout waits for the holder's Unlock, and
// fails naming the holder when the holder keeps it past the timeout.
func TestLockWait(t *testing.T) {
	e := testsupport.StartEtcd(t)
	a, b := store(t, e, "app1"), store(t, e, "app2")
	ctx := context.Background()
	l, err := a.Lock(ctx, "deploy", 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Lock(ctx, "switch green", 400*time.Millisecond)
	if took := time.Since(start); !errors.Is(err, state.ErrLocked) || !strings.Contains(err.Error(), "on host app1") ||
		took < 400*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("Lock with 400ms while held = %v after %s, want ErrLocked naming host app1 after 400ms", err, took)
	}
	// A wait longer than the lease's TTL: the waiter's lease lives on.
	hold := b.LeaseTTL + 300*time.Millisecond
	time.AfterFunc(hold, l.Unlock)
	start = time.Now()
	l2, err := b.Lock(ctx, "switch green", 5*time.Second)
	if err != nil {
		t.Fatalf("Lock waiting for the holder: %v", err)
	}
	defer l2.Unlock()
	if took := time.Since(start); took < hold-50*time.Millisecond || took > hold+2*time.Second {
		t.Errorf("Lock took %s, want it to wait for the Unlock after %s", took, hold)
	}
	select {
	case <-l2.Lost():
		t.Errorf("Lost was closed on a lock taken after a wait longer than the lease's TTL %s", b.LeaseTTL)
	case <-time.After(300 * time.Millisecond):
	}
	if h := raw(t, b, "/bgd/app/lock-holder"); !strings.Contains(h, `"host":"app2"`) || !strings.Contains(h, `"command":"switch green"`) {
		t.Errorf("holder record %s, want host app2 and command switch green", h)
	}
}

// TestLockHolderKilled: the lock of a process killed with SIGKILL is free
// once its lease expires, LeaseTTL later.
func TestLockHolderKilled(t *testing.T) {
	e := testsupport.StartEtcd(t)
	const ttl = time.Second
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BGD_ETCDSTORE_HELPER=hold-lock", "BGD_ETCD_ENDPOINT="+e.Endpoint, "BGD_LEASE_TTL="+ttl.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper said %q, want locked", line)
	}
	s := store(t, e, "app1")
	ctx := context.Background()
	_, err = s.Lock(ctx, "switch green", 0)
	want := "locked by pid " + strconv.Itoa(cmd.Process.Pid) + " (deploy --release r42) on host lb-other"
	if !errors.Is(err, state.ErrLocked) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Lock while the helper holds it = %v, want %q", err, want)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	l, err := s.Lock(ctx, "switch green", 10*time.Second)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	defer l.Unlock()
	took := time.Since(killed)
	t.Logf("lock free %s after SIGKILL (lease TTL %s)", took.Round(time.Millisecond), ttl)
	if took > ttl+2*time.Second {
		t.Errorf("the lock was free %s after the holder died, want at most TTL %s + 2s", took, ttl)
	}
}

// TestEtcdDown: with etcd stopped, Load, Save and Lock fail within a bound
// with an error naming the endpoint, a held lock is reported lost, and all
// work again once etcd is back.
func TestEtcdDown(t *testing.T) {
	e := testsupport.StartEtcd(t)
	s := store(t, e, "app1")
	ctx := context.Background()
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	held, err := s.Lock(ctx, "deploy", 0)
	if err != nil {
		t.Fatal(err)
	}
	e.Stop()
	stopped := time.Now()
	lostAfter := make(chan time.Duration, 1)
	go func() { <-held.Lost(); lostAfter <- time.Since(stopped) }()

	bound := s.Timeout + time.Second
	check := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		err := f()
		took := time.Since(start)
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "etcd at "+e.Endpoint+" unreachable") {
			t.Errorf("%s with etcd down = %v, want ErrUnreachable naming %s", what, err, e.Endpoint)
		}
		if took > bound {
			t.Errorf("%s with etcd down took %s, want at most %s", what, took, bound)
		}
	}
	check("Load", func() error { _, err := s.Load(); return err })
	check("Save", func() error { return s.Save(st) })
	check("Lock", func() error { _, err := s.Lock(ctx, "switch green", 0); return err })
	check("Lock with a timeout", func() error { _, err := s.Lock(ctx, "switch green", 500*time.Millisecond); return err })
	check("Dial", func() error {
		c, err := Dial(Options{Endpoints: []string{e.Endpoint}, DialTimeout: s.Timeout})
		if err == nil {
			c.Close()
		}
		return err
	})

	// The client gives a lease up when no renewal came for its TTL; it
	// looks once a second.
	select {
	case d := <-lostAfter:
		t.Logf("held lock lost %s after etcd stopped (lease TTL %s)", d.Round(time.Millisecond), s.LeaseTTL)
		if d > s.LeaseTTL+2*time.Second {
			t.Errorf("Lost was closed %s after etcd stopped, want at most TTL %s + 2s", d, s.LeaseTTL)
		}
	case <-time.After(time.Until(stopped.Add(s.LeaseTTL + 10*time.Second))):
		t.Error("Lost was not closed while etcd was down 10s past the lease TTL")
	}
	start := time.Now()
	held.Unlock()
	if took := time.Since(start); took > bound {
		t.Errorf("Unlock with etcd down took %s, want at most %s", took, bound)
	}

	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	// The client reconnects on its own, within its reconnect backoff.
	var loaded *state.State
	for {
		if loaded, err = s.Load(); err == nil || time.Since(restarted) > maxReconnectDelay+5*time.Second {
			break
		}
	}
	if err != nil {
		t.Fatalf("Load after etcd came back: %v", err)
	}
	t.Logf("Load works %s after etcd came back", time.Since(restarted).Round(time.Millisecond))
	if !reflect.DeepEqual(loaded, st) {
		t.Errorf("state after the restart = %+v, want %+v", loaded, st)
	}
	if err := s.Save(loaded); err != nil {
		t.Errorf("Save after etcd came back: %v", err)
	}
	l, err := s.Lock(ctx, "switch green", 5*time.Second)
	if err != nil {
		t.Fatalf("Lock after etcd came back: %v", err)
	}
	l.Unlock()
}

// TestDial: no endpoints, or an endpoint where nothing listens, fail with a
// message that says what to do, within the dial timeout.
func TestDial(t *testing.T) {
	if _, err := Dial(Options{}); err == nil || !strings.Contains(err.Error(), "state.endpoints") {
		t.Errorf("Dial without endpoints = %v, want an error naming state.endpoints", err)
	}
	e := testsupport.StartEtcd(t)
	e.Stop() // a port nothing listens on
	start := time.Now()
	_, err := Dial(Options{Endpoints: []string{e.Endpoint}, DialTimeout: 500 * time.Millisecond})
	if took := time.Since(start); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), e.Endpoint) || took > 1500*time.Millisecond {
		t.Errorf("Dial of a dead endpoint = %v after %s, want ErrUnreachable naming %s within 500ms", err, took, e.Endpoint)
	}
}

// TestDialAuth: with etcd's auth on, a wrong password is refused with a
// message naming the user and what to check, and a user whose role may
// read only bgd's prefix connects and uses the store.
func TestDialAuth(t *testing.T) {
	e := testsupport.StartEtcd(t)
	root := dial(t, e)
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := root.RoleAdd(ctx, "root"); return err },
		func() error { _, err := root.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := root.RoleAdd(ctx, "bgd"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "bgd", "/bgd/", clientv3.GetPrefixRangeEnd("/bgd/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := root.UserAdd(ctx, "lb1", "s3cret"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "lb1", "bgd"); return err },
		func() error { _, err := root.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("setting up etcd auth: %v", err)
		}
	}

	_, err := Dial(Options{Endpoints: []string{e.Endpoint}, DialTimeout: 2 * time.Second, Username: "lb1", Password: "wrong"})
	if err == nil || !strings.Contains(err.Error(), `refused user "lb1"`) || !strings.Contains(err.Error(), "state.password_file") {
		t.Errorf("Dial with a wrong password = %v, want a refusal naming the user and state.password_file", err)
	}

	c, err := Dial(Options{Endpoints: []string{e.Endpoint}, DialTimeout: 2 * time.Second, Username: "lb1", Password: "s3cret"})
	if err != nil {
		t.Fatalf("Dial as a user who may use only /bgd/: %v", err)
	}
	defer c.Close()
	s := &Store{Client: c, Service: "app", BluePort: 1, GreenPort: 2, Host: "lb1", LeaseTTL: time.Second, Timeout: time.Second}
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, "deploy", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if err := s.Save(st); err != nil {
		t.Errorf("Save as lb1: %v", err)
	}
}
