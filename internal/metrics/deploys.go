package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

var (
	svcLabel    = []string{"service"}
	deploysDesc = prometheus.NewDesc("bgd_deploys_total",
		"Deploys by outcome, from the state file's totals: success (a release went live: a deploy's flip, a canary's promote), "+
			"failed (a deploy that failed or was interrupted), rolled_back (bgd rollback, bgd abort) and "+
			"auto_rolled_back (rolled back or aborted by bgd's analysis).",
		[]string{"service", "status"}, nil)
	flipsDesc = prometheus.NewDesc("bgd_flips_total",
		"Times all traffic moved from one colour to the other (deploy, switch, rollback, promote, failover).", svcLabel, nil)
	autoRollbacksDesc = prometheus.NewDesc("bgd_auto_rollbacks_total",
		"Releases bgd rolled back or aborted by itself after its analysis crossed a threshold.", svcLabel, nil)
	lastDurationDesc = prometheus.NewDesc("bgd_last_deploy_duration_seconds",
		"How long the last deploy took, from its start to its last step (its flip, automatic rollback, promote or failure); absent when unknown.", svcLabel, nil)
	lastTimestampDesc = prometheus.NewDesc("bgd_last_deploy_timestamp_seconds",
		"When the last deploy ended (its last step), in seconds since the Unix epoch.", svcLabel, nil)
	lastSuccessDesc = prometheus.NewDesc("bgd_last_deploy_success",
		"1 when the last deploy went live (or, with --no-switch, came up healthy) and stayed, 0 when it failed or was rolled back by the analysis.", svcLabel, nil)
	activeDesc = prometheus.NewDesc("bgd_active_slot",
		"1 for the colour the state says is active, 0 for the other.", []string{"service", "slot"}, nil)
	healthyDesc = prometheus.NewDesc("bgd_slot_healthy",
		"The slot's last recorded health check: 1 passed, 0 failed or stopped.", []string{"service", "slot"}, nil)
	canaryDesc = prometheus.NewDesc("bgd_canary_weight",
		"The canary's percentage (0-100) of new requests; 0 without a canary.", svcLabel, nil)
)

// deployStatuses are bgd_deploys_total's status values, always all
// exported (0 until one happens) so that rate() sees the first one.
var deployStatuses = []string{state.StatusSuccess, state.StatusFailed, state.StatusRolledBack, state.StatusAutoRolledBack}

// DeployCollector is bgd's own record of the services' deploys.
type DeployCollector struct{ services []Service }

// NewDeployCollector collects, at each scrape, each service's state file
// (read, never locked): its totals (deploys by outcome, flips, automatic
// rollbacks, the last deploy), its active colour, its slots' last
// recorded health and its canary's weight. A state file that cannot be
// read makes the scrape report an error naming it (promhttp's
// ContinueOnError still serves the other services).
func NewDeployCollector(services []Service) *DeployCollector {
	return &DeployCollector{services: services}
}

// Describe sends the series' descriptors.
func (c *DeployCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{deploysDesc, flipsDesc, autoRollbacksDesc, lastDurationDesc,
		lastTimestampDesc, lastSuccessDesc, activeDesc, healthyDesc, canaryDesc} {
		ch <- d
	}
}

// Collect reads each state file and sends its series.
func (c *DeployCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.services {
		st, err := s.State()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(deploysDesc, fmt.Errorf("service %s: %w", s.Name, err))
			continue
		}
		emitState(ch, s.Name, st)
	}
}

func emitState(ch chan<- prometheus.Metric, service string, st *state.State) {
	t := st.CurrentTotals()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{service}, labels...)...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{service}, labels...)...)
	}
	for _, status := range deployStatuses {
		counter(deploysDesc, deploys(t, status), status)
	}
	counter(flipsDesc, t.Flips)
	counter(autoRollbacksDesc, t.CountStatus(state.StatusAutoRolledBack))
	if d := t.LastDeploy; d != nil {
		if d.Duration > 0 {
			gauge(lastDurationDesc, seconds(d.Duration))
		}
		gauge(lastTimestampDesc, float64(d.Ended.UnixMilli())/1e3)
		gauge(lastSuccessDesc, b2f(d.Status == state.StatusSuccess))
	}
	for _, c := range config.Colors {
		gauge(activeDesc, b2f(st.ActiveVersion == c), c.String())
		gauge(healthyDesc, b2f(st.Slot(c).Healthy), c.String())
	}
	w := 0
	if st.Canary != nil {
		w = st.Canary.Weight
	}
	gauge(canaryDesc, float64(w))
}

// deploys is bgd_deploys_total{status}: success counts the releases that
// went live (a deploy's flip, or --no-switch's healthy slot; a canary's
// promote); failed a deploy's failures; the rolled back ones every
// rollback or abort with that status.
func deploys(t *state.Totals, status string) uint64 {
	switch status {
	case state.StatusSuccess:
		return t.Count("deploy", status) + t.Count("promote", status)
	case state.StatusFailed:
		return t.Count("deploy", status)
	}
	return t.CountStatus(status)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
