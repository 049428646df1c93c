package bus

import (
	"strings"
	"testing"
)

func TestExposureWarning(t *testing.T) {
	open := &startPlan{host: "0.0.0.0", port: 4222, clustered: true, chost: "192.0.2.1", cport: 6222}
	var o Options
	w := o.exposure(open)
	if !strings.Contains(w, "client port 0.0.0.0:4222") || !strings.Contains(w, "cluster port 192.0.2.1:6222") || !strings.Contains(w, "--authorize") {
		t.Fatalf("warning %q", w)
	}
	o.Token, o.ClusterUser = "t", "u"
	if w := o.exposure(open); w != "" {
		t.Fatalf("secured node warned: %q", w)
	}
	var plain Options
	if w := plain.exposure(&startPlan{host: "127.0.0.1", port: 4222}); w != "" {
		t.Fatalf("loopback node warned: %q", w)
	}
	if w := plain.exposure(&startPlan{host: "::1", port: 4222, clustered: true, chost: "localhost"}); w != "" {
		t.Fatalf("loopback node warned: %q", w)
	}
}
