package main

import (
	"github.com/bgd-dev/bgd/internal/metrics"
	"github.com/bgd-dev/bgd/orchestrator"
)

// writeMetrics replaces each service's file in metrics.textfile_dir (none
// when it is not set) after a command changed or checked it. A file that
// cannot be written is a warning: the command's own outcome stands.
func (e *env) writeMetrics(orchs ...*orchestrator.Orchestrator) {
	if e.textfileDir == "" {
		return
	}
	for _, o := range orchs {
		if path, err := metrics.WriteTextfile(e.textfileDir, metrics.FromOrchestrator(o)); err != nil {
			e.logger().Warn("metrics not written", "service", o.Service().Name, "file", path, "err", err)
		}
	}
}
