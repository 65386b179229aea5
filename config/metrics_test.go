package config

import (
	"strings"
	"testing"
)

func TestMetricsSection(t *testing.T) {
	cfg, err := Load(Source{Path: writeConfig(t, "metrics:\n  textfile_dir: /var/lib/prometheus/node-exporter\n"+minimal), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Metrics.TextfileDir; got != "/var/lib/prometheus/node-exporter" {
		t.Errorf("metrics.textfile_dir = %q", got)
	}
	cfg, err = Load(Source{Path: writeConfig(t, minimal), Getenv: envOf(nil)})
	if err != nil || cfg.Metrics.TextfileDir != "" {
		t.Errorf("without metrics: textfile_dir %q, %v; want \"\" (no file)", cfg.Metrics.TextfileDir, err)
	}
	_, err = Load(Source{Path: writeConfig(t, "metrics:\n  textfile: /tmp\n"+minimal), Getenv: envOf(nil)})
	if err == nil || !strings.Contains(err.Error(), `unknown key "textfile"`) {
		t.Errorf("a misspelt key: %v, want it named", err)
	}
	_, err = Load(Source{Path: writeConfig(t, "metrics:\n  textfile_dir: \"a\\0b\"\n"+minimal), Getenv: envOf(nil)})
	if err == nil || !strings.Contains(err.Error(), "metrics.textfile_dir") {
		t.Errorf("a NUL byte: %v, want metrics.textfile_dir named", err)
	}
}
