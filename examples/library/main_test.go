package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerbus/peerbus/bus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// readmeMarker precedes README.md's copy of this program.
const readmeMarker = "<!-- examples/library/main.go -->\n```go\n"

// TestREADMEShowsThisProgram checks that README.md shows main.go as it
// is, byte for byte.
func TestREADMEShowsThisProgram(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	prog, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), readmeMarker)
	if !ok {
		t.Fatalf("README.md has no %q", readmeMarker)
	}
	block, _, ok = strings.Cut(block, "```\n")
	if !ok {
		t.Fatal("README.md: the program's code block does not end")
	}
	if block == string(prog) {
		return
	}
	bl, pl := strings.Split(block, "\n"), strings.Split(string(prog), "\n")
	for i := range min(len(bl), len(pl)) {
		if bl[i] != pl[i] {
			t.Fatalf("README.md's copy of examples/library/main.go differs at line %d:\nREADME:  %s\nmain.go: %s", i+1, bl[i], pl[i])
		}
	}
	t.Fatalf("README.md's copy of examples/library/main.go has %d lines, main.go %d", len(bl), len(pl))
}

// wantOutput are the lines the program prints, alone on its bus.
var wantOutput = `local: 50
on this peer: 50
any peer of math: 50
replies from the peers of math: 1
divide: no_such_tag (the peer offers [info multiply ping])
peers of math: 1
watched: o-1 50
replayed: order.created true
`

// TestRunEmbedded runs the program with a node of its own.
func TestRunEmbedded(t *testing.T) {
	t.Setenv(bus.EnvDataDir, t.TempDir())
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != wantOutput {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), wantOutput)
	}
}

// TestRunBesideANode runs the program twice while a node listens on the
// default address's kind of port: embedded (its own free port) and
// joining the node with PEERBUS_NATS_URL.
func TestRunBesideANode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, err := bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()

	t.Run("own node", func(t *testing.T) {
		t.Setenv(bus.EnvDataDir, t.TempDir())
		var out strings.Builder
		if err := run(ctx, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != wantOutput {
			t.Errorf("output:\n%s\nwant:\n%s", out.String(), wantOutput)
		}
	})
	t.Run("joined", func(t *testing.T) {
		t.Setenv(bus.EnvNATSURL, node.ClientURL())
		var out strings.Builder
		if err := run(ctx, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != wantOutput {
			t.Errorf("output:\n%s\nwant:\n%s", out.String(), wantOutput)
		}
	})
}
