package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestIfacesCmdJSON(t *testing.T) {
	out, _, err := runNetCmd(t, newIfacesCmd(), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep ifacesReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	var loopback bool
	for _, it := range rep.Interfaces {
		for _, a := range it.Addrs {
			if a.Addr() == netip.MustParseAddr("127.0.0.1") && it.Loopback {
				loopback = true
			}
		}
	}
	if !loopback {
		t.Fatalf("no loopback interface with 127.0.0.1 in %s", out)
	}
	if len(rep.DefaultRoutes)+len(rep.NoDefaultRoute) != 2 {
		t.Fatalf("want a default route or a reason for each family: %s", out)
	}
	for _, r := range rep.DefaultRoutes {
		if !r.LocalIP.IsValid() || r.Interface == "" {
			t.Fatalf("incomplete default route %+v", r)
		}
	}
}

func TestIfacesCmdText(t *testing.T) {
	out, _, err := runNetCmd(t, newIfacesCmd())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"INTERFACE", "127.0.0.1/8", "FAMILY", "IPv4"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := runNetCmd(t, newIfacesCmd(), "extra"); err == nil {
		t.Fatal("ifaces accepted an argument")
	}
}

// TestIfacesBinary runs the built binary.
func TestIfacesBinary(t *testing.T) {
	r := runCLI(t, "", "ifaces", "--json")
	if r.code != 0 || !json.Valid([]byte(r.stdout)) {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "", "ifaces", "--bogus")
	if r.code == 0 || !strings.Contains(r.stderr, "unknown flag") {
		t.Fatalf("bad flag: exit %d, stderr %q", r.code, r.stderr)
	}
}
