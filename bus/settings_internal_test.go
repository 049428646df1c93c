package bus

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int32{"1048576": 1 << 20, "512K": 512 << 10, "8M": 8 << 20, "8MB": 8 << 20, "2MiB": 2 << 20, "1g": 1 << 30, "0": 0} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "4G", "1.5M"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
}

func TestMonitorHostPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port int
		bad  bool
	}{
		{"", "", 0, false},
		{"8222", "127.0.0.1", 8222, false},
		{":8222", "127.0.0.1", 8222, false},
		{"-1", "127.0.0.1", -1, false},
		{"0.0.0.0:8222", "0.0.0.0", 8222, false},
		{"[::1]:8222", "::1", 8222, false},
		{"0", "", 0, true},
		{"host:port", "", 0, true},
		{"70000", "", 0, true},
	} {
		host, port, err := monitorHostPort(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrInvalidOption) {
				t.Errorf("%q: err %v, want ErrInvalidOption", tc.in, err)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("%q: %q %d %v; want %q %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
	if _, err := New(WithExternalURL("nats://127.0.0.1:4222"), WithMonitor("8222")); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("monitor in external mode: err %v, want ErrInvalidOption", err)
	}
}
