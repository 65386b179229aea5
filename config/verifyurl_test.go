package config

import "testing"

func TestDefaultVerifyURLFollowsListen(t *testing.T) {
	for listen, want := range map[string]string{
		"80":             "http://127.0.0.1:80/",
		"0.0.0.0:8080":   "http://127.0.0.1:8080/",
		"*:8080":         "http://127.0.0.1:8080/",
		"10.0.0.5:80":    "http://10.0.0.5:80/",
		"127.0.0.1:8099": "http://127.0.0.1:8099/",
		"[::1]:8080":     "http://[::1]:8080/",
		"[::]:8080":      "http://[::1]:8080/",
	} {
		if got := verifyURL(listen); got != want {
			t.Errorf("listen %q: verify_url %q, want %q", listen, got, want)
		}
	}
}
