package config

import (
	"errors"
	"testing"
)

// FuzzParse: no input makes the loader panic, and every refusal is an
// ErrInvalid (exit 2), never some other error. What Parse accepts must also
// survive defaults and validation without a panic.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		minimal,
		"",
		"services:\n  app:\n",
		"services:\n  app:\n    command: [x]\n    colour: blue\n",
		"services:\n  app:\n    command: [x]\n    health: {interval: 5 parsecs, timeout: -1s}\n",
		"services:\n  \"a b\":\n    command: [\"{{.Port\"]\n    blue: {port: 70000}\n",
		"services:\n  app:\n    command: [x]\n    lb: {driver: haproxy, haproxy: {backends: {blue: b, green: b, red: r}}}\n",
		"services:\n  app:\n    command: [x]\n    lb: {driver: nginx, nginx: {listen: \"[::1]:80\", verify_url: \"http://%zz\"}}\n",
		"services:\n  app:\n    command: [x]\n    lb: {builtin: {listen: \":\"}}\n",
		"services: &a\n  app: *a\n",
		"services: [1, 2]\n",
		"- - - -\n",
		"state_dir: !!binary aGVsbG8=\n",
		"services:\n  app:\n    env: {A: [1]}\n",
		"{\"services\": {\"app\": {\"command\": [\"x\"], \"blue\": {\"port\": 1}, \"green\": {\"port\": 2}}}}",
		"---\n---\n",
		"services:\n  app:\n    command: [x]\n    health: {interval: !!int 3}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error %q does not wrap ErrInvalid", err)
			}
			if cfg != nil {
				t.Fatal("Parse returned a config with an error")
			}
			return
		}
		cfg.fillDefaults()
		if err := cfg.Validate(); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Validate error %q does not wrap ErrInvalid", err)
		}
		cfg.ServiceNames()
		for name := range cfg.Services {
			cfg.StatePath(name)
			cfg.LogPath(name, "blue")
		}
	})
}
