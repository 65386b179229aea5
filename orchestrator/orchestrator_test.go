package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/bgd-dev/bgd/slots"
	"github.com/bgd-dev/bgd/state"
)

// fakeLB is a balancer that does not follow the state file (like nginx or
// HAProxy): it routes where Flip told it, or fails when told to.
type fakeLB struct {
	active  config.Color
	flipErr error
	flips   int
}

var _ lb.Balancer = (*fakeLB)(nil)

func (f *fakeLB) Flip(ctx context.Context, r lb.Route) error {
	f.flips++
	if f.flipErr != nil {
		return f.flipErr
	}
	f.active = r.Active.Color
	return nil
}
func (f *fakeLB) Active(ctx context.Context) (config.Color, error) { return f.active, nil }
func (f *fakeLB) Render(r lb.Route) ([]byte, error)                { return []byte(r.Active.Color), nil }

// newOrch returns an orchestrator of the embedded default (slots are this
// test binary as demo app) on free ports, with state in a temp dir; edit, if
// given, changes the service's config first.
func newOrch(t *testing.T, bal lb.Balancer, edit ...func(*config.Service)) (*orchestrator.Orchestrator, *state.Store) {
	t.Helper()
	env := map[string]string{"BLUE_PORT": freePort(), "GREEN_PORT": freePort(), "BG_PROXY_PORT": freePort(),
		"BG_STATE_FILE": filepath.Join(t.TempDir(), "bg_state.json")}
	cfg, err := config.Load(config.Source{Getenv: func(k string) string { return env[k] }, Self: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Services["app"].StopGrace = config.Duration(2 * time.Second)
	for _, e := range edit {
		e(cfg.Services["app"])
	}
	o, err := orchestrator.New(cfg, "app", orchestrator.Options{Balancer: bal})
	if err != nil {
		t.Fatal(err)
	}
	store := &state.Store{Path: o.StatePath()}
	t.Cleanup(func() {
		for _, c := range config.Colors {
			for _, id := range slots.FindMarked(slots.SlotMarker(o.StatePath(), "app", c.String())) {
				slots.Stop(context.Background(), id, time.Second)
			}
		}
	})
	return o, store
}

func TestDeployFlipFailureKeepsTrafficAndRecords(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	ctx := context.Background()
	if _, err := o.Start(ctx, "blue", ""); err != nil {
		t.Fatal(err)
	}
	bal.flipErr = fmt.Errorf("%w: nginx kept its old config", lb.ErrNotConfirmed)
	_, err := o.Deploy(ctx, orchestrator.DeployOptions{Release: "v2"})
	if !errors.Is(err, orchestrator.ErrFailed) || !errors.Is(err, lb.ErrNotConfirmed) {
		t.Fatalf("Deploy = %v, want ErrFailed wrapping ErrNotConfirmed", err)
	}
	st, _ := store.Load()
	if st.ActiveVersion != "blue" || bal.active != "blue" {
		t.Fatalf("active_version=%s lb=%s, want blue/blue", st.ActiveVersion, bal.active)
	}
	if st.GreenPID != 0 {
		t.Errorf("the new slot should be stopped after a failed flip, green_pid=%d", st.GreenPID)
	}
	last := st.History[len(st.History)-1]
	if last.Status != state.StatusFailed || last.To != "green" || !strings.Contains(last.Reason, "nginx kept its old config") {
		t.Errorf("last history entry = %+v", last)
	}
	if st.InProgress != nil {
		t.Errorf("in_progress left set: %+v", st.InProgress)
	}
}

func TestStartOfActiveColourRoutesTheLoadBalancer(t *testing.T) {
	bal := &fakeLB{}
	o, _ := newOrch(t, bal)
	res, err := o.Start(context.Background(), "blue", "")
	if err != nil {
		t.Fatal(err)
	}
	if bal.active != "blue" || !res.Changed {
		t.Fatalf("lb routes to %q after start blue (changed=%v)", bal.active, res.Changed)
	}
	// Starting it again changes nothing; the driver is only asked to
	// confirm the routing it already has.
	res, err = o.Start(context.Background(), "blue", "")
	if err != nil || res.Changed || bal.flips != 2 || bal.active != "blue" {
		t.Fatalf("second start: err=%v changed=%v flips=%d", err, res.Changed, bal.flips)
	}
}

func TestInterruptedOperationIsRecordedByTheNextOne(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	st := state.New(0, 0)
	st.InProgress = &state.Operation{Command: "deploy --release v9", PID: 99999, Started: state.Now(), From: "blue", To: "green"}
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Stop(context.Background(), "green", false); err != nil {
		t.Fatal(err)
	}
	st, _ = store.Load()
	if len(st.History) != 1 || st.History[0].Status != state.StatusFailed || !strings.Contains(st.History[0].Reason, "interrupted: deploy --release v9 (pid 99999)") {
		t.Fatalf("history = %+v", st.History)
	}
	if st.InProgress != nil {
		t.Fatalf("in_progress not cleared: %+v", st.InProgress)
	}
}

func TestRollbackImpossibleWhenPreviousSlotIsDown(t *testing.T) {
	bal := &fakeLB{}
	o, store := newOrch(t, bal)
	if _, err := o.Start(context.Background(), "blue", ""); err != nil {
		t.Fatal(err)
	}
	_, err := o.Rollback(context.Background())
	if !errors.Is(err, orchestrator.ErrFailed) || !strings.Contains(err.Error(), "rollback impossible: Cannot roll back to green: not healthy") {
		t.Fatalf("Rollback = %v", err)
	}
	if st, _ := store.Load(); st.ActiveVersion != "blue" || bal.active != "blue" {
		t.Fatalf("rollback moved traffic: state %s lb %s", st.ActiveVersion, bal.active)
	}
}

// TestEnvValuesAreTemplates: env values are expanded like the command.
func TestEnvValuesAreTemplates(t *testing.T) {
	o, store := newOrch(t, &fakeLB{}, func(s *config.Service) {
		s.Env = map[string]string{"APP_SLOT": "{{.Color}}-{{.Release}}-{{.Port}}", "APP_ENV": "production"}
	})
	if _, err := o.Start(context.Background(), "blue", "r1"); err != nil {
		t.Fatal(err)
	}
	st, _ := store.Load()
	want := fmt.Sprintf("blue-r1-%d", st.BluePort)
	if got := slots.Getenv(st.BluePID, "APP_SLOT"); got != want {
		t.Errorf("APP_SLOT=%q, want %q", got, want)
	}
	if got := slots.Getenv(st.BluePID, "APP_ENV"); got != "production" {
		t.Errorf("APP_ENV=%q, want production", got)
	}
}
