package config

import (
	"slices"
	"testing"
)

func TestSmokePathsLoad(t *testing.T) {
	yml := "services:\n  app:\n    command: [\"true\"]\n    blue: {port: 7101}\n    green: {port: 7102}\n    health: {smoke: [\"/\", \"/api/ping?deep=1\"]}\n"
	cfg, err := Load(Source{Path: writeConfig(t, yml), Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Services["app"].Health.Smoke; !slices.Equal(got, []string{"/", "/api/ping?deep=1"}) {
		t.Errorf("health.smoke = %q", got)
	}
}
