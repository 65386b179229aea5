package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgd-dev/bgd/internal/testsupport"
)

// TestEtcdBackendOverTLS: with an etcd that serves https and requires a
// client certificate, bgd reaches it through state.ca_file, cert_file and
// key_file; without the client certificate, or trusting another CA, it
// fails with an error naming etcd, and nothing is written.
func TestEtcdBackendOverTLS(t *testing.T) {
	dir := t.TempDir()
	files, err := testsupport.WriteTestCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := testsupport.StartEtcdTLS(t, files)
	other, err := testsupport.WriteTestCerts(t.TempDir()) // a CA etcd does not know
	if err != nil {
		t.Fatal(err)
	}
	blue, green := freePort(t), freePort(t)
	write := func(name, tlsKeys string) string {
		cfg := fmt.Sprintf(`state_dir: %s
state: {backend: etcd, endpoints: [%q], prefix: /tls, dial_timeout: 1s, %s}
services:
  app:
    command: [%q, demo-app, --port, "{{.Port}}"]
    blue: {port: %d}
    green: {port: %d}
`, filepath.Join(dir, name), e.Endpoint, tlsKeys, bgdBin, blue, green)
		path := filepath.Join(dir, name+".yml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good", fmt.Sprintf("ca_file: %s, cert_file: %s, key_file: %s", files.CAFile, files.ClientCertFile, files.ClientKeyFile))
	out, errOut, code := bgd(t, dir, nil, "--config", good, "--json", "status")
	var st struct {
		Agents []any `json:"agents"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Agents == nil {
		t.Fatalf("status over TLS: exit %d\n%s\n%s", code, out, errOut)
	}

	for _, c := range []struct{ name, keys, why string }{
		{"no client certificate", "ca_file: " + files.CAFile, "bad certificate"},
		{"another CA", fmt.Sprintf("ca_file: %s, cert_file: %s, key_file: %s", other.CAFile, other.ClientCertFile, other.ClientKeyFile), "unknown authority"},
	} {
		path := write(strings.ReplaceAll(c.name, " ", "-"), c.keys)
		_, errOut, code := bgd(t, dir, nil, "--config", path, "--wait-agents=false", "start", "blue")
		t.Logf("%s: exit %d: %s", c.name, code, strings.TrimSpace(errOut))
		if code == 0 || !strings.Contains(errOut, e.Endpoint) || !strings.Contains(errOut, c.why) {
			t.Errorf("%s: exit %d, %s; want a failure naming %s and saying %q", c.name, code, errOut, e.Endpoint, c.why)
		}
	}
	// The refused commands wrote nothing: no history, no slot started.
	out, _, _ = bgd(t, dir, nil, "--config", good, "--json", "status")
	if !strings.Contains(out, `"deployment_history": []`) || strings.Contains(out, `"running": true`) {
		t.Errorf("a refused command changed the state:\n%s", out)
	}
}
