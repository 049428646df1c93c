package names

import "testing"

func TestNames(t *testing.T) {
	for name, want := range map[string]bool{
		LogStream: true, "KV_" + ProjectionBucket: true, "PEERBUS_X": true, "KV_PEERBUS_Y": true,
		"KV_OTHER": false, "ORDERS": false, "peerbus_events": false,
	} {
		if got := ManagedStream(name); got != want {
			t.Errorf("ManagedStream(%q) = %v, want %v", name, got, want)
		}
	}
	if LogStream != "PEERBUS_EVENTS" || ProjectionBucket != "PEERBUS_PROJECTIONS" {
		t.Fatalf("stream names changed: %s %s", LogStream, ProjectionBucket)
	}
	for s, ok := range map[string]bool{"a": true, "uuid-1": true, "": false, "a.b": false, "*": false, "a b": false, ">": false} {
		if err := Token(s); (err == nil) != ok {
			t.Errorf("Token(%q) = %v", s, err)
		}
	}
	for _, tc := range []struct {
		s        string
		wildcard bool
		ok       bool
	}{
		{"a.b.c", false, true}, {"a.*", false, false}, {"a.*", true, true}, {"a.>", true, true},
		{">.a", true, false}, {"a..b", false, false}, {"", true, false}, {"a\tb", false, false}, {"a*b", true, false},
	} {
		if err := Tokens(tc.s, tc.wildcard); (err == nil) != tc.ok {
			t.Errorf("Tokens(%q, %v) = %v", tc.s, tc.wildcard, err)
		}
	}
}
