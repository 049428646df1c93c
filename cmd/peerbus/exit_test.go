package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestCallExitStatus checks the exit statuses PROTOCOL.md and call --help
// give: 2 for every error reply (no_such_tag of a peer called by id), 1
// when no reply came. The caller's own timeout is met by a server of the
// tag that never answers: a peerbus function is bound by the caller's
// deadline and answers timeout at that same instant, which may come
// before the caller's own timer.
func TestCallExitStatus(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--no-jetstream")
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]
	mute, err := nats.Connect(s)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	if _, err := mute.QueueSubscribe("peerbus.any.slow", "peerbus", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := mute.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"call", "--peer", n.info["peer"], "nosuch"}, 2, "code:    no_such_tag"},
		{[]string{"call", "--timeout", "300ms", "slow"}, 1, "no result within 300ms"},
		{[]string{"call", "nosuch"}, 1, `no peer offers tag "nosuch"`},
		{[]string{"call", "--peer", "all", "--group", "nosuch", "ping"}, 1, `no peer of group "nosuch" offers tag "ping"`},
	} {
		r := runCLI(t, "", append(tc.args, "--server", s)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("peerbus %v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}
