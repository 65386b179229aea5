package haproxy

import (
	"errors"
	"testing"
	"time"

	"github.com/bgd-dev/bgd/lb/haproxy/admin"
)

func TestObservationFromShowStat(t *testing.T) {
	server := func(proxy, name string, f map[string]string) admin.Stat {
		return admin.Stat{Proxy: proxy, Name: name, Type: admin.StatServer, Status: "UP", Fields: f}
	}
	rows := []admin.Stat{
		{Proxy: "app_green", Name: "BACKEND", Type: admin.StatBackend, Fields: map[string]string{"hrsp_2xx": "999"}},
		server("app_green", "green", map[string]string{"hrsp_2xx": "90", "hrsp_4xx": "3", "hrsp_5xx": "4", "econ": "1", "eresp": "2", "rtime": "12"}),
		server("app_split", "green", map[string]string{"hrsp_2xx": "10", "hrsp_5xx": "1", "rtime": "30"}),
		server("app_split", "blue", map[string]string{"hrsp_2xx": "500", "rtime": "1"}),
		server("app_blue", "blue", map[string]string{"hrsp_2xx": "7"}),
	}
	o, err := observation(rows, "app_green", "app_split", "green")
	if err != nil {
		t.Fatal(err)
	}
	// 90+3+4+1+2 in its backend, 10+1 in the split one.
	if o.Requests != 111 || o.Errors != 8 || o.Mean != 30*time.Millisecond || o.Buckets != nil {
		t.Errorf("green = %+v, want 111 requests, 8 errors, mean 30ms", o)
	}
	if _, err := observation(rows, "app_other", "app_split2", "green"); !errors.Is(err, ErrNoBackend) {
		t.Errorf("a backend not in show stat = %v", err)
	}
	rows = append(rows, server("app_green", "green", map[string]string{"hrsp_2xx": "lots"}))
	if _, err := observation(rows, "app_green", "app_split", "green"); err == nil {
		t.Error("a counter that is not a number was accepted")
	}
}
