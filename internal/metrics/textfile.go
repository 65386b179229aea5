package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/bgd-dev/bgd/internal/fsx"
)

// Registry is a registry with the collectors of services: deploys for
// every one, slots for those with an Observer (all of them, or only the
// Cumulative ones when cumulativeOnly).
func Registry(services []Service, timeout time.Duration, cumulativeOnly bool) *prometheus.Registry {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewDeployCollector(services))
	var observed []Service
	for _, s := range services {
		if s.Observer != nil && (s.Cumulative || !cumulativeOnly) {
			observed = append(observed, s)
		}
	}
	if len(observed) > 0 {
		reg.MustRegister(NewSlotCollector(observed, timeout))
	}
	return reg
}

// exposition gathers reg in Prometheus's text format. An error of one
// collector is returned with what the others gave.
func exposition(reg prometheus.Gatherer) ([]byte, error) {
	families, gerr := reg.Gather()
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), gerr
}

// TextfileTimeout bounds a textfile's wait for the load balancer: a
// command's own work is done by then, and must not hang on its metrics.
const TextfileTimeout = time.Second

// WriteTextfile replaces <dir>/bgd_<service>.prom with the service's
// metrics, for node_exporter's textfile collector: its deploys, and its
// slots when the load balancer's counts outlive this process (builtin,
// HAProxy; nginx's would start at zero here). The file is written whole
// to a temp file in dir (a name node_exporter skips: not *.prom), mode
// 0644, and renamed over the old one, so node_exporter never reads half a
// file. dir must exist. When the load balancer cannot be asked the file
// still has the deploys (and bgd_slot_observe_success 0).
func WriteTextfile(dir string, s Service) (string, error) {
	path := filepath.Join(dir, fileName(s.Name))
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return path, fmt.Errorf("metrics.textfile_dir %s does not exist: create it (node_exporter's --collector.textfile.directory) or change metrics.textfile_dir", dir)
	case err != nil:
		return path, fmt.Errorf("metrics.textfile_dir: %w", err)
	case !fi.IsDir():
		return path, fmt.Errorf("metrics.textfile_dir %s is not a directory", dir)
	}
	data, err := exposition(Registry([]Service{s}, TextfileTimeout, true))
	if err != nil {
		return path, fmt.Errorf("metrics of service %s: %w", s.Name, err)
	}
	if err := fsx.WriteFileAtomic(path, data, 0o644); err != nil {
		return path, fmt.Errorf("metrics.textfile_dir: %w", err)
	}
	return path, nil
}
