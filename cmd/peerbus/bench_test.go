package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchJSON runs "peerbus bench" on a cheap subset of cases as a
// real process and checks the shape of its JSON report. It asserts
// nothing about the numbers beyond their being positive.
func TestBenchJSON(t *testing.T) {
	bin := peerbusBin(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--duration", "200ms", "--rounds", "2", "--json",
		"--only", "call,transient,pipe-udp,node-rss")
	cmd.Env = testEnv("TMPDIR=" + tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("peerbus bench: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	var rep struct {
		CPUs     int    `json:"cpus"`
		Duration string `json:"duration"`
		Rounds   int    `json:"rounds"`
		Results  []struct {
			Case     string   `json:"case"`
			Name     string   `json:"name"`
			Value    *float64 `json:"value"`
			Baseline *float64 `json:"baseline"`
			Ratio    *float64 `json:"ratio"`
			Unit     string   `json:"unit"`
			Better   string   `json:"better"`
			Rounds   int      `json:"rounds"`
		} `json:"results"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	if rep.CPUs < 1 || rep.Duration != "200ms" || rep.Rounds != 2 || len(rep.Errors) > 0 {
		t.Fatalf("report header: %+v", rep)
	}
	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Name)
		if r.Value == nil || r.Baseline == nil || r.Ratio == nil {
			t.Errorf("%s: missing value, baseline or ratio: %s", r.Name, stdout.String())
			continue
		}
		if !(*r.Value > 0 && *r.Baseline > 0 && *r.Ratio > 0) {
			t.Errorf("%s: value %v, baseline %v, ratio %v: want all > 0", r.Name, *r.Value, *r.Baseline, *r.Ratio)
		}
		if r.Unit == "" || (r.Better != "higher" && r.Better != "lower") || r.Rounds < 1 {
			t.Errorf("%s: unit %q, better %q, rounds %d", r.Name, r.Unit, r.Better, r.Rounds)
		}
	}
	want := []string{"call p50", "call p99", "transient", "pipe-udp", "node-rss"}
	if !slices.Equal(names, want) {
		t.Errorf("rows %q, want %q", names, want)
	}
	if !strings.Contains(stderr.String(), "bench [1/4] call") {
		t.Errorf("no progress on stderr:\n%s", stderr.String())
	}
	// The nodes' data directories are gone.
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		var l []string
		for _, e := range left {
			l = append(l, e.Name())
		}
		t.Errorf("left in TMPDIR: %v", l)
	}
}

// TestBenchFlags checks the refusals of bad flags.
func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--only", "nosuchcase"},
		{"bench", "--duration", "0s"},
		{"bench", "--rounds", "0"},
		{"bench", "--peers", "1"},
	} {
		cmd := newBenchCmd()
		cmd.SetArgs(args[1:])
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		if err := cmd.Execute(); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
