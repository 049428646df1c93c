package peer_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/peerbus/peerbus/peer"
)

func TestHistogramBuckets(t *testing.T) {
	for i := 1; i < peer.HistogramBuckets-1; i++ {
		lo, hi := peer.HistogramLower(i), peer.HistogramLower(i+1)
		if hi <= lo {
			t.Fatalf("bucket %d: [%v, %v)", i, lo, hi)
		}
		if float64(hi-lo)/float64(lo) > 0.25+1e-9 {
			t.Fatalf("bucket %d: [%v, %v) wider than a quarter of its bound", i, lo, hi)
		}
	}
	if peer.HistogramLower(1) != 1024 {
		t.Fatalf("bucket 1 starts at %v", peer.HistogramLower(1))
	}
	// Quantiles of a known distribution: 1..1000 µs.
	var h peer.Histogram
	ds := make([]time.Duration, 1000)
	for i := range ds {
		ds[i] = time.Duration(i+1) * time.Microsecond
	}
	for _, d := range ds {
		h[bucketOf(d)]++
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		want := ds[int(q*1000)-1]
		got := h.Quantile(q)
		if r := float64(got) / float64(want); r < 0.875 || r > 1.125 {
			t.Errorf("quantile %v: %v, want about %v", q, got, want)
		}
	}
	var empty peer.Histogram
	if empty.Quantile(0.5) != 0 {
		t.Error("quantile of an empty histogram")
	}
	prev := h
	h[3] += 5
	if d := h.Sub(&prev); d.Count() != 5 || d[3] != 5 {
		t.Errorf("Sub: %v", d)
	}
}

// bucketOf finds the bucket of d from the exported bounds.
func bucketOf(d time.Duration) int {
	i := 0
	for i+1 < peer.HistogramBuckets && peer.HistogramLower(i+1) <= d {
		i++
	}
	return i
}

// TestTagStats checks the counters of served tags: calls, errors by
// code, requests in flight and the latency histogram.
func TestTagStats(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	release := make(chan struct{})
	if _, err := peer.Register(p, "ok", func(context.Context, int) (int, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Register(p, "fail", func(context.Context, int) (int, error) { return 0, errors.New("no") }); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Register(p, "slow", func(ctx context.Context, _ int) (int, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	caller := newPeer(t, n)
	ctx := context.Background()
	for range 5 {
		if _, err := caller.Call(ctx, "ok", []byte("1"), peer.OnPeer(p.ID())); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := caller.Call(ctx, "fail", []byte("1"), peer.OnPeer(p.ID())); err == nil {
			t.Fatal("fail succeeded")
		}
	}
	if _, err := caller.Call(ctx, "ok", []byte(`"x"`), peer.OnPeer(p.ID())); !errors.Is(err, peer.ErrBadRequest) {
		t.Fatalf("bad argument: %v", err)
	}
	slowDone := make(chan error, 1)
	go func() {
		_, err := caller.Call(ctx, "slow", []byte("1"), peer.OnPeer(p.ID()))
		slowDone <- err
	}()
	stat := func(tag string) peer.TagStats {
		for _, s := range p.Stats() {
			if s.Tag == tag {
				return s
			}
		}
		t.Fatalf("no stats for %s", tag)
		return peer.TagStats{}
	}
	waitFor(t, "slow in flight", func() bool { return stat("slow").InFlight == 1 })
	close(release)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "slow done", func() bool { return stat("slow").InFlight == 0 })

	ok := stat("ok")
	if ok.Calls != 6 || ok.Errors != 1 || ok.ErrorsByCode[peer.CodeBadRequest] != 1 || ok.Latency.Count() != 6 || ok.Time <= 0 {
		t.Errorf("ok: %+v", ok)
	}
	fail := stat("fail")
	if fail.Calls != 2 || fail.Errors != 2 || fail.ErrorsByCode[peer.CodeError] != 2 || fail.LastError != "no" {
		t.Errorf("fail: %+v", fail)
	}
	if s := stat("slow"); s.Calls != 1 || s.Errors != 0 || s.Latency.Quantile(0.5) <= 0 {
		t.Errorf("slow: %+v", s)
	}
}

// gather sends a request and collects the replies until none came for
// a moment.
func gather(t *testing.T, nc *nats.Conn, subject string, data []byte) []*nats.Msg {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, data); err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for {
		m, err := sub.NextMsg(500 * time.Millisecond)
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}

// TestMicroDiscovery decodes the replies to $SRV.PING, INFO and STATS
// with nats.go's micro types, beside a real micro service.
func TestMicroDiscovery(t *testing.T) {
	n := single(t)
	p := newPeer(t, n, peer.WithName("calc-1"), peer.WithGroup("math"))
	if _, err := peer.Register(p, "multiply", multiply); err != nil {
		t.Fatal(err)
	}
	q := newPeer(t, n)
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	svc, err := micro.AddService(nc, micro.Config{Name: "other", Version: "0.0.1",
		Endpoint: &micro.EndpointConfig{Subject: "other.echo", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()

	// PING of every service: both peers and the micro service.
	names := map[string]string{}
	for _, m := range gather(t, nc, "$SRV.PING", nil) {
		var ping micro.Ping
		if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Type != micro.PingResponseType {
			t.Fatalf("ping reply %s: %v", m.Data, err)
		}
		names[ping.ID] = ping.Name
	}
	if names[p.ID()] != peer.MicroService || names[q.ID()] != peer.MicroService || len(names) != 3 {
		t.Fatalf("ping replies: %v", names)
	}
	if ms := gather(t, nc, "$SRV.PING.peerbus", nil); len(ms) != 2 {
		t.Fatalf("$SRV.PING.peerbus: %d replies, want the two peers'", len(ms))
	}

	// INFO of one peer: an endpoint per tag, on its any subject.
	m, err := nc.Request("$SRV.INFO.peerbus."+p.ID(), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil || info.Type != micro.InfoResponseType {
		t.Fatalf("info %s: %v", m.Data, err)
	}
	if info.ID != p.ID() || info.Metadata["peer_name"] != "calc-1" || info.Metadata["group"] != "math" || len(info.Endpoints) != 3 {
		t.Fatalf("info: %+v", info)
	}
	var mul micro.EndpointInfo
	for _, e := range info.Endpoints {
		if e.Name == "multiply" {
			mul = e
		}
	}
	if mul.Subject != peer.AnySubject("multiply") || mul.QueueGroup != "peerbus" || mul.Metadata["group_any"] != peer.GroupAnySubject("math", "multiply") {
		t.Fatalf("multiply endpoint: %+v", mul)
	}

	// STATS after three calls and one error.
	for range 3 {
		if _, err := q.Call(context.Background(), "multiply", []byte(`{"A":2,"B":3}`), peer.OnAny()); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = q.Call(context.Background(), "multiply", []byte(`nope`), peer.OnAny())
	m, err = nc.Request("$SRV.STATS.peerbus."+p.ID(), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st micro.Stats
	if err := json.Unmarshal(m.Data, &st); err != nil || st.Type != micro.StatsResponseType || st.ID != p.ID() {
		t.Fatalf("stats %s: %v", m.Data, err)
	}
	var es *micro.EndpointStats
	for _, e := range st.Endpoints {
		if e.Name == "multiply" {
			es = e
		}
	}
	if es == nil || es.NumRequests != 4 || es.NumErrors != 1 || es.ProcessingTime <= 0 || es.AverageProcessingTime <= 0 || es.LastError == "" {
		t.Fatalf("multiply stats: %+v", es)
	}
	var data peer.MicroStatsData
	if err := json.Unmarshal(es.Data, &data); err != nil {
		t.Fatal(err)
	}
	h := data.Histogram()
	if data.ErrorsByCode[peer.CodeBadRequest] != 1 || h.Count() != 4 || data.P50 <= 0 || data.P99 < data.P50 {
		t.Fatalf("multiply stats data: %+v", data)
	}
}

// TestMicroBadRequests checks that malformed micro requests get an error
// reply with the micro error headers, and that the peer goes on.
func TestMicroBadRequests(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	nc := n.Conn()
	for _, tc := range []struct{ subject, data string }{
		{"$SRV.PING.peerbus." + p.ID(), "garbage"},
		{"$SRV.STATS.peerbus." + p.ID(), "[1,2]"},
		{"$SRV.NOSUCH.peerbus." + p.ID(), ""},
	} {
		m, err := nc.Request(tc.subject, []byte(tc.data), 5*time.Second)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.subject, tc.data, err)
		}
		if m.Header.Get(micro.ErrorCodeHeader) != "400" || m.Header.Get(micro.ErrorHeader) == "" {
			t.Errorf("%s %q: headers %v, want a 400 micro error", tc.subject, tc.data, m.Header)
		}
	}
	m, err := nc.Request("$SRV.PING.peerbus."+p.ID(), []byte("{}"), 5*time.Second)
	var ping micro.Ping
	if err != nil || json.Unmarshal(m.Data, &ping) != nil || ping.ID != p.ID() {
		t.Fatalf("ping after bad requests: %v %v", err, m)
	}
}
