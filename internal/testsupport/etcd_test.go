package testsupport

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// etcdKV puts (value != "") or reads one key through etcd's JSON gateway
// (/v3/kv/...), so that this test needs no etcd client library.
func etcdKV(endpoint, key, value string) (string, error) {
	b64 := base64.StdEncoding.EncodeToString
	req := map[string]string{"key": b64([]byte(key))}
	path := "/v3/kv/range"
	if value != "" {
		req["value"], path = b64([]byte(value)), "/v3/kv/put"
	}
	body, _ := json.Marshal(req)
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Post(endpoint+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Kvs []struct{ Value string } `json:"kvs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: status %d, %v", path, resp.StatusCode, err)
	}
	if len(out.Kvs) == 0 {
		return "", nil
	}
	v, err := base64.StdEncoding.DecodeString(out.Kvs[0].Value)
	return string(v), err
}

// TestEtcd starts etcd, writes a key, stops it (the endpoint goes dead),
// starts it again on the same endpoint and reads the key back from the
// same data.
func TestEtcd(t *testing.T) {
	e := StartEtcd(t)
	if e.ClientPort < etcdPortLo || e.ClientPort >= etcdPortHi || e.PeerPort == e.ClientPort {
		t.Fatalf("ports client %d, peer %d: want two ports in %d-%d", e.ClientPort, e.PeerPort, etcdPortLo, etcdPortHi-1)
	}
	if _, err := etcdKV(e.Endpoint, "/bgd-test/k", "v1"); err != nil {
		t.Fatalf("put to %s: %v\n%s", e.Endpoint, err, e.Output())
	}
	pid := e.Proc().Pid()
	e.Stop()
	if e.Proc() != nil {
		t.Fatal("Proc() is not nil after Stop")
	}
	if _, err := etcdKV(e.Endpoint, "/bgd-test/k", ""); err == nil {
		t.Fatalf("%s still answers after Stop", e.Endpoint)
	}
	e.Stop() // a second Stop is harmless
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	if e.Proc().Pid() == pid {
		t.Fatalf("Start after Stop kept pid %d", pid)
	}
	if err := e.Start(); err == nil {
		t.Error("a second Start of a running etcd succeeded, want an error")
	}
	got, err := etcdKV(e.Endpoint, "/bgd-test/k", "")
	if err != nil || got != "v1" {
		t.Fatalf("after the restart /bgd-test/k = %q, %v; want v1 from the same data", got, err)
	}
}
