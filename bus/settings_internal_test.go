package bus

import "testing"

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
