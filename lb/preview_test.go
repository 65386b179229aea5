package lb

import "testing"

func TestLoopbackURL(t *testing.T) {
	for _, c := range []struct{ listen, want string }{
		{"8080", "http://127.0.0.1:8080/x"},
		{":8080", "http://127.0.0.1:8080/x"},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/x"},
		{"[::]:8080", "http://[::1]:8080/x"},
		{"127.0.0.2:81", "http://127.0.0.2:81/x"},
	} {
		if got, err := LoopbackURL(c.listen, "/x"); err != nil || got != c.want {
			t.Errorf("LoopbackURL(%q) = %q, %v; want %q", c.listen, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "host", "h:0", "h:99999"} {
		if got, err := LoopbackURL(bad, "/x"); err == nil {
			t.Errorf("LoopbackURL(%q) = %q, want an error", bad, got)
		}
	}
}
