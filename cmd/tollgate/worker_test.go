package main

import (
	"maps"
	"runtime"
	"testing"
)

// TestParseLabels: every worker has os and arch, which --labels may
// override; a label without "=" is refused.
func TestParseLabels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{"", map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH}},
		{"pool=large, zone=b", map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH, "pool": "large", "zone": "b"}},
		{"os=debian12", map[string]string{"os": "debian12", "arch": runtime.GOARCH}},
	} {
		got, err := parseLabels(tc.in)
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("parseLabels(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"pool", "=x", "a=b,c"} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("parseLabels(%q) accepted", bad)
		}
	}
}
