package eventlog

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestConfigOf checks the inverse of streamConfig that Configure uses
// to read the configuration of an existing log.
func TestConfigOf(t *testing.T) {
	// A stream configuration read back gives the same stream.
	for _, lc := range []Config{{}, {MaxAge: -1, MaxBytes: -1, MaxEvents: 5, Memory: true, DiscardNew: true, Duplicates: time.Second}} {
		sc := jetstream.StreamConfig{MaxAge: lc.MaxAge, MaxBytes: lc.MaxBytes, MaxMsgs: -1, MaxMsgSize: -1, Duplicates: lc.Duplicates}
		if sc.MaxAge < 0 {
			sc.MaxAge = 0
		}
		if lc.MaxEvents > 0 {
			sc.MaxMsgs = lc.MaxEvents
		}
		if lc.Memory {
			sc.Storage = jetstream.MemoryStorage
		}
		if lc.DiscardNew {
			sc.Discard = jetstream.DiscardNew
		}
		got := configOf(sc)
		if lc.MaxAge == 0 {
			lc.MaxAge = -1 // a zero stream max age is no limit
		}
		if lc.MaxBytes == 0 {
			lc.MaxBytes = -1
		}
		if got != lc {
			t.Errorf("configOf(%+v) = %+v, want %+v", sc, got, lc)
		}
	}
}

// TestSettingsApply checks that only the given settings change.
func TestSettingsApply(t *testing.T) {
	var s Settings
	if !s.IsZero() {
		t.Fatal("zero settings given")
	}
	base := Config{MaxAge: 5, MaxBytes: 6, MaxEvents: 7, Duplicates: 8, MaxEventSize: 9, Replicas: 3}
	if got := s.Apply(base); got != base {
		t.Fatalf("no settings: %+v", got)
	}
	age, mem := time.Hour, true
	s = Settings{MaxAge: &age, Memory: &mem}
	want := base
	want.MaxAge, want.Memory = time.Hour, true
	if got := s.Apply(base); s.IsZero() || got != want {
		t.Fatalf("apply = %+v, want %+v", got, want)
	}
}
