package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
)

// TestLogSync checks that --log-sync reaches the JetStream store: every
// write synced by default, an interval when one is given, and values it
// cannot use refused.
func TestLogSync(t *testing.T) {
	for _, tc := range []struct {
		value    string
		always   bool
		interval time.Duration
	}{
		{"always", true, 0},
		{"", true, 0}, // the default
		{"250ms", false, 250 * time.Millisecond},
	} {
		var opts []bus.Option
		if tc.value != "" {
			d, err := bus.ParseLogSync(tc.value)
			if err != nil {
				t.Fatal(err)
			}
			opts = append(opts, bus.WithLogSync(d))
		}
		opts = append(opts, bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(t.TempDir()))
		n, err := bus.Start(context.Background(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		jc := n.Server().JetStreamConfig()
		n.Close()
		if jc == nil || jc.SyncAlways != tc.always || (!tc.always && jc.SyncInterval != tc.interval) {
			t.Errorf("log sync %q: JetStream config %+v", tc.value, jc)
		}
	}
	for _, v := range []string{"0s", "-1s", "sometimes", ""} {
		if _, err := bus.ParseLogSync(v); !errors.Is(err, bus.ErrInvalidOption) {
			t.Errorf("ParseLogSync(%q): %v, want ErrInvalidOption", v, err)
		}
	}
}
