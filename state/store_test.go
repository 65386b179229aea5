package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as a second bgd process (the
// tableflip way): BGD_STATE_HELPER selects what the child does.
func TestMain(m *testing.M) {
	switch os.Getenv("BGD_STATE_HELPER") {
	case "":
		os.Exit(m.Run())
	case "hold-lock":
		// Take the lock, say so, then hold it until killed.
		s := &Store{Path: os.Getenv("BGD_STATE_PATH")}
		if _, err := s.Lock(context.Background(), "deploy --release r42", 0); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		sleepForever()
	case "update":
		// N locked read-modify-writes, each counting and recording one event.
		s := &Store{Path: os.Getenv("BGD_STATE_PATH"), BluePort: 1, GreenPort: 2}
		n, _ := strconv.Atoi(os.Getenv("BGD_STATE_N"))
		for i := range n {
			err := update(s, context.Background(), "switch", 30*time.Second, func(st *State) error {
				st.Generation++
				st.Record(Event{From: "blue", To: "green", Status: StatusSuccess, Reason: fmt.Sprintf("%d-%d", os.Getpid(), i)})
				return nil
			})
			if err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
		}
		os.Exit(0)
	}
	os.Exit(3)
}

// helper starts the test binary as a helper process.
func helper(t *testing.T, mode, path string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"BGD_STATE_HELPER=" + mode, "BGD_STATE_PATH=" + path}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

func sample() *State {
	st := New(7101, 7102)
	st.ActiveVersion = "green"
	st.BluePID, st.GreenPID = 100, 200
	st.GreenHealthy = true
	st.LastSwitch = TimePtr(Now())
	st.LastCheck = TimePtr(Now())
	st.ProxyPID = 300
	st.BlueRelease, st.GreenRelease = "r1", "r2"
	st.Generation = 7
	st.Record(Event{From: "blue", To: "green", Status: StatusSuccess, Action: "deploy", Release: "r2"})
	st.InProgress = &Operation{Command: "deploy", PID: 400, Started: Now(), From: "green", To: "blue"}
	return st
}

func TestSaveLoadRoundTrip(t *testing.T) {
	s := &Store{Path: filepath.Join(t.TempDir(), "sub", "bg_state.json")}
	want := sample()
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip changed the state:\n got %+v\nwant %+v", got, want)
	}
	// The seed's field names are the contract: they must be in the file.
	data, _ := os.ReadFile(s.Path)
	for _, field := range []string{"active_version", "blue_port", "green_port", "blue_pid", "green_pid",
		"blue_healthy", "green_healthy", "last_switch", "last_check", "deployment_history", "proxy_pid",
		"blue_release", "green_release"} {
		if !bytes.Contains(data, []byte(`"`+field+`"`)) {
			t.Errorf("state file lacks the field %q", field)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(s.Path), ".*tmp*")); len(leftovers) > 0 {
		t.Errorf("temp files left after Save: %v", leftovers)
	}
}

func TestLoadMissingIsNew(t *testing.T) {
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json"), BluePort: 7101, GreenPort: 7102}
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.ActiveVersion != "blue" || st.BluePort != 7101 || st.GreenPort != 7102 || st.History == nil || s.Exists() {
		t.Errorf("Load of a missing file = %+v (exists %v), want New(7101, 7102) and nothing written", st, s.Exists())
	}
}

func TestFileModes(t *testing.T) {
	old := syscall.Umask(0) // the most permissive umask must not widen the modes
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "state")
	s := &Store{Path: filepath.Join(dir, "bg_state.json")}
	l, err := s.Lock(context.Background(), "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	// An existing world-readable file is replaced by a 0600 one.
	if err := os.WriteFile(s.Path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(sample()); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		want os.FileMode
	}{
		{s.Path, 0o600},
		{s.Path + ".lock", 0o600},
		{dir, 0o750 | os.ModeDir},
	}
	for _, c := range cases {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.want {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.want)
		}
	}
}

func TestRecordBoundsHistory(t *testing.T) {
	st := New(1, 2)
	for i := range MaxHistory + 10 {
		st.Record(Event{Status: StatusSuccess, Reason: strconv.Itoa(i)})
	}
	if len(st.History) != MaxHistory {
		t.Fatalf("history has %d entries, want %d", len(st.History), MaxHistory)
	}
	if first, last := st.History[0].Reason, st.History[MaxHistory-1].Reason; first != "10" || last != strconv.Itoa(MaxHistory+9) {
		t.Errorf("history runs from %s to %s, want the newest %d, newest last", first, last, MaxHistory)
	}
	if st.History[0].Timestamp.IsZero() {
		t.Error("Record left the timestamp zero")
	}
}

func TestDecode(t *testing.T) {
	valid, _ := json.Marshal(sample())
	cases := []struct {
		name string
		data string
		want string // error substring; "" for success
	}{
		{"valid", string(valid), ""},
		{"valid with newline", string(valid) + "\n", ""},
		{"seed file without bgd fields", `{"active_version":"blue","blue_port":5005,"green_port":5006,"blue_pid":0,"green_pid":0,"blue_healthy":false,"green_healthy":false,"last_switch":null,"last_check":null,"deployment_history":[]}`, ""},
		{"torn", string(valid[:len(valid)/2]), "unexpected EOF"},
		{"torn after one byte", "{", "EOF"},
		{"empty", "", "empty"},
		{"only whitespace", " \n\t", "empty"},
		{"NUL bytes", "\x00\x00\x00\x00", "invalid character"},
		{"not JSON", "active_version: blue\n", "invalid character"},
		{"JSON array", "[]", "cannot unmarshal array"},
		{"JSON null", "null", "active_version"},
		{"JSON string", `"blue"`, "cannot unmarshal string"},
		{"missing active_version", `{"blue_port":5005}`, "active_version"},
		{"unknown colour", `{"active_version":"purple"}`, `active_version is "purple"`},
		{"wrong type", `{"active_version":"blue","blue_port":"5005"}`, "cannot unmarshal string"},
		{"unknown field", `{"active_version":"blue","colour":"x"}`, `unknown field "colour"`},
		{"port out of range", `{"active_version":"blue","green_port":70000}`, "port 70000"},
		{"negative pid", `{"active_version":"blue","blue_pid":-1}`, "negative pid"},
		{"bad timestamp", `{"active_version":"blue","last_switch":"yesterday"}`, "cannot parse"},
		{"history without status", `{"active_version":"blue","deployment_history":[{"from":"blue"}]}`, "deployment_history[0] has no status"},
		{"trailing object", `{"active_version":"blue"}{"active_version":"green"}`, "trailing data"},
		{"trailing bracket", `{"active_version":"blue"}]`, "trailing data"},
		{"trailing brace", `{"active_version":"blue"}}`, "trailing data"},
		{"two files concatenated", string(valid) + string(valid), "trailing data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Decode([]byte(tc.data))
			if tc.want == "" {
				if err != nil || st == nil || st.History == nil {
					t.Fatalf("Decode = %v, %v; want a state with a non-nil history", st, err)
				}
				return
			}
			if err == nil || st != nil {
				t.Fatalf("Decode = %+v, nil; want an error containing %q", st, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestLoadCorrupt: a corrupt file is refused with ErrCorrupt naming the file
// and the recovery command, and left byte for byte as it was.
func TestLoadCorrupt(t *testing.T) {
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	bad := []byte(`{"active_version":"blue","blue_po`)
	if err := os.WriteFile(s.Path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), s.Path) || !strings.Contains(err.Error(), "bgd reconcile") {
		t.Errorf("Load = %v, want ErrCorrupt naming %s and `bgd reconcile`", err, s.Path)
	}
	err = update(s, context.Background(), "switch", 0, func(st *State) error {
		t.Error("Update called fn on a corrupt state")
		return nil
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("Update = %v, want ErrCorrupt", err)
	}
	if got, _ := os.ReadFile(s.Path); !bytes.Equal(got, bad) {
		t.Errorf("corrupt file changed to %q", got)
	}
}

func TestUpdateErrorSavesNothing(t *testing.T) {
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	if err := s.Save(sample()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(s.Path)
	boom := errors.New("boom")
	err := update(s, context.Background(), "switch", 0, func(st *State) error {
		st.ActiveVersion = "blue"
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Update = %v, want fn's error", err)
	}
	if after, _ := os.ReadFile(s.Path); !bytes.Equal(before, after) {
		t.Error("Update saved although fn failed")
	}
}

// TestLockedErrorMessage: the message names the holder, and its host only
// when the lock is shared between hosts (a state file's message is as it
// always was).
func TestLockedErrorMessage(t *testing.T) {
	for _, c := range []struct {
		err  LockedError
		want string
	}{
		{LockedError{Path: "/var/lib/bgd/app.json", PID: 123, Command: "deploy"},
			"/var/lib/bgd/app.json is locked by pid 123 (deploy): wait for it to finish, or retry with --lock-timeout"},
		{LockedError{Path: "/var/lib/bgd/app.json"},
			"/var/lib/bgd/app.json is locked by an unknown process: wait for it to finish, or retry with --lock-timeout"},
		{LockedError{Path: "etcd key /bgd/app/lock", PID: 123, Command: "deploy --release v2", Host: "app1"},
			"etcd key /bgd/app/lock is locked by pid 123 (deploy --release v2) on host app1: wait for it to finish, or retry with --lock-timeout"},
		{LockedError{Path: "etcd key /bgd/app/lock", Host: "app1"},
			"etcd key /bgd/app/lock is locked by an unknown process on host app1: wait for it to finish, or retry with --lock-timeout"},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("%+v:\n got %q\nwant %q", c.err, got, c.want)
		}
		if !errors.Is(&c.err, ErrLocked) {
			t.Errorf("%+v does not match ErrLocked", c.err)
		}
	}
}

// TestLockContention: a second lock fails at once with a *LockedError naming
// the holder's pid and command, waits when given a timeout, and is free as
// soon as the holder is gone, even when it was SIGKILLed.
func TestLockContention(t *testing.T) {
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	ctx := context.Background()

	t.Run("same process, no timeout", func(t *testing.T) {
		l, err := s.Lock(ctx, "deploy --release r1", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		start := time.Now()
		_, err = s.Lock(ctx, "switch green", 0)
		var le *LockedError
		if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
			t.Fatalf("second Lock = %v, want a *LockedError", err)
		}
		if le.PID != os.Getpid() || le.Command != "deploy --release r1" || le.Path != s.Path {
			t.Errorf("LockedError = %+v, want pid %d, command %q, path %s", le, os.Getpid(), "deploy --release r1", s.Path)
		}
		for _, w := range []string{strconv.Itoa(os.Getpid()), "deploy --release r1", s.Path, "--lock-timeout"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("message %q does not name %q", err, w)
			}
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("Lock with timeout 0 took %s, want an immediate failure", d)
		}
	})

	t.Run("waits up to the timeout", func(t *testing.T) {
		l, err := s.Lock(ctx, "deploy", 0)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = s.Lock(ctx, "switch", 150*time.Millisecond)
		if d := time.Since(start); !errors.Is(err, ErrLocked) || d < 150*time.Millisecond || d > 2*time.Second {
			t.Errorf("Lock(150ms) = %v after %s, want ErrLocked after about 150ms", err, d)
		}
		released := make(chan time.Time, 1)
		go func() {
			time.Sleep(100 * time.Millisecond) // the holder works a while
			released <- time.Now()
			l.Unlock()
		}()
		l2, err := s.Lock(ctx, "switch", 5*time.Second)
		if err != nil {
			t.Fatalf("Lock(5s) while the holder finishes = %v, want success", err)
		}
		got := time.Now()
		l2.Unlock()
		if rel := <-released; got.Before(rel) {
			t.Error("got the lock before the holder released it")
		}
	})

	t.Run("context ends the wait", func(t *testing.T) {
		l, err := s.Lock(ctx, "deploy", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = s.Lock(cctx, "switch", time.Minute)
		if d := time.Since(start); !errors.Is(err, ErrLocked) || d > 2*time.Second {
			t.Errorf("Lock with a cancelled context = %v after %s, want ErrLocked soon", err, d)
		}
	})

	t.Run("another process, killed", func(t *testing.T) {
		cmd := helper(t, "hold-lock", s.Path)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "locked\n" {
			t.Fatalf("helper said %q, want locked", line)
		}
		_, err := s.Lock(ctx, "switch", 0)
		var le *LockedError
		if !errors.As(err, &le) || le.PID != cmd.Process.Pid || le.Command != "deploy --release r42" {
			t.Fatalf("Lock = %v, want a *LockedError naming pid %d and \"deploy --release r42\"", err, cmd.Process.Pid)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		l, err := s.Lock(ctx, "switch", 5*time.Second)
		if err != nil {
			t.Fatalf("Lock after the holder was killed = %v, want success (the kernel drops flocks)", err)
		}
		l.Unlock()
	})

	t.Run("unlock twice is safe", func(t *testing.T) {
		l, err := s.Lock(ctx, "x", 0)
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		l.Unlock()
		var nilLock *Lock
		nilLock.Unlock()
	})
}

// TestConcurrentUpdatesLoseNothing: two processes doing 50 locked
// read-modify-writes each; every one of the 100 increments and events must
// be there.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	const perProcess = 50
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	var cmds []*exec.Cmd
	for range 2 {
		cmd := helper(t, "update", s.Path, "BGD_STATE_N="+strconv.Itoa(perProcess))
		cmd.Stdout = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v", cmd.Process.Pid, err)
		}
	}
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation != 2*perProcess {
		t.Errorf("%d updates counted, want %d: updates were lost", st.Generation, 2*perProcess)
	}
	// History keeps the newest MaxHistory; within each process they are in order.
	if len(st.History) != MaxHistory {
		t.Fatalf("history has %d entries, want %d", len(st.History), MaxHistory)
	}
	last := map[string]int{}
	for _, e := range st.History {
		pid, n, _ := strings.Cut(e.Reason, "-")
		i, _ := strconv.Atoi(n)
		if prev, ok := last[pid]; ok && i != prev+1 {
			t.Errorf("process %s: entry %d follows %d: an entry was lost", pid, i, prev)
		}
		last[pid] = i
	}
	for pid, i := range last {
		if i != perProcess-1 {
			t.Errorf("process %s: newest entry is %d, want %d", pid, i, perProcess-1)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(s.Path), ".*tmp*")); len(leftovers) > 0 {
		t.Errorf("temp files left: %v", leftovers)
	}
}

// TestReadersNeverSeeATornFile: while one goroutine keeps replacing the
// file, readers only ever decode a complete old or new state.
func TestReadersNeverSeeATornFile(t *testing.T) {
	s := &Store{Path: filepath.Join(t.TempDir(), "bg_state.json")}
	small, big := sample(), sample()
	for i := range MaxHistory {
		big.Record(Event{Status: StatusSuccess, Reason: strings.Repeat("x", 200) + strconv.Itoa(i)})
	}
	if err := s.Save(small); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			st := small
			if i%2 == 1 {
				st = big
			}
			if err := s.Save(st); err != nil {
				t.Error(err)
				return
			}
		}
	})
	deadline := time.Now().Add(500 * time.Millisecond)
	reads := 0
	for time.Now().Before(deadline) {
		if _, err := s.Load(); err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		reads++
	}
	close(done)
	wg.Wait()
	if reads == 0 {
		t.Fatal("no reads happened")
	}
}

// TestStaleTempFilesRemoved: a writer killed mid-write leaves a temp file;
// a lock holder's RemoveStaleTemps removes it, and only it.
func TestStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	s := &Store{Path: filepath.Join(dir, "bg_state.json")}
	stale := filepath.Join(dir, ".bg_state.json.tmp-123")
	other := filepath.Join(dir, ".web.json.tmp-123")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte(`{"active_`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.Lock(context.Background(), "x", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.RemoveStaleTemps()
	l.Unlock()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file %s still there", stale)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another store's temp file was removed: %v", err)
	}
}

// sleepForever blocks a helper process until it is killed. Not `select {}`:
// in a binary built without cgo, a process whose only goroutine blocks there
// dies with "all goroutines are asleep - deadlock!".
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}

// update is the locked read-modify-write of the workflows (Lock, Load, fn,
// Save, Unlock): fn changes the state, which is saved if fn returns nil.
func update(s *Store, ctx context.Context, command string, timeout time.Duration, fn func(*State) error) error {
	l, err := s.Lock(ctx, command, timeout)
	if err != nil {
		return err
	}
	defer l.Unlock()
	st, err := s.Load()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	return s.Save(st)
}

// TestCloneIsDeep: changing a clone's records never changes the original.
func TestCloneIsDeep(t *testing.T) {
	st := fullState()
	c := st.Clone()
	c.Canary.Weight, c.Watch.Errors, c.Paused.Until = 99, 1000, time.Time{}
	c.InProgress.PID, c.BlueRestarts.Count, c.History[0].Status = 1, 99, "changed"
	if st.Canary.Weight == 99 || st.Watch.Errors == 1000 || st.Paused.Until.IsZero() || st.InProgress.PID == 1 ||
		st.BlueRestarts.Count == 99 || st.History[0].Status == "changed" {
		t.Errorf("the clone shares records with the original: %+v", st)
	}
}
