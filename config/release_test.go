package config

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckRelease(t *testing.T) {
	for _, ok := range []string{"v1", "2026.12.01-1", "a_b", "v1.2.3-rc.1", strings.Repeat("x", MaxRelease)} {
		if err := CheckRelease(ok); err != nil {
			t.Errorf("CheckRelease(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../../x", "a/b", "/abs", "v1\nv2", "v1\x1b[31m", "a b", "{{.Port}}",
		strings.Repeat("x", MaxRelease+1), "v1\x00"} {
		err := CheckRelease(bad)
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckRelease(%q) = %v, want an ErrInvalid", bad, err)
		}
	}
}
