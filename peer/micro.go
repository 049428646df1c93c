package peer

// NATS service discovery: every serving peer answers the $SRV.PING,
// $SRV.INFO and $SRV.STATS requests of the NATS micro protocol (nats.go
// package micro, "nats micro ls"), as one service named MicroService per
// peer, with one endpoint per tag.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

const (
	// MicroService is the service name of every peer in the NATS micro
	// protocol; the service id is the peer id.
	MicroService = "peerbus"
	// MicroVersion is the service version peers announce.
	MicroVersion = "1.0.0"
)

// MicroStatsData is the "data" object of a tag's endpoint in a
// $SRV.STATS reply: what the micro schema has no field for.
type MicroStatsData struct {
	// InFlight is the number of requests being served.
	InFlight int64 `json:"in_flight"`
	// ErrorsByCode counts the error replies by code.
	ErrorsByCode map[string]uint64 `json:"errors_by_code,omitempty"`
	// P50, P90 and P99 are processing time quantiles since the tag was
	// registered, in nanoseconds.
	P50 int64 `json:"p50_ns"`
	P90 int64 `json:"p90_ns"`
	P99 int64 `json:"p99_ns"`
	// Latency holds the non-empty buckets of the processing time
	// histogram, bucket index (decimal) to count (see Histogram).
	Latency map[string]uint64 `json:"latency_buckets,omitempty"`
}

// Histogram returns the histogram of d.Latency; bucket keys that are not
// bucket indexes are ignored.
func (d MicroStatsData) Histogram() Histogram {
	var h Histogram
	for k, v := range d.Latency {
		var i int
		if _, err := fmt.Sscan(k, &i); err == nil && i >= 0 && i < HistogramBuckets {
			h[i] = v
		}
	}
	return h
}

// microSubjects are the subjects a serving peer answers: every service,
// the services named MicroService, and this one.
func (p *Peer) microSubjects() []string {
	out := make([]string, 0, 5)
	for _, v := range []string{"PING", "INFO", "STATS"} {
		out = append(out, micro.APIPrefix+"."+v)
	}
	return append(out, micro.APIPrefix+".*."+MicroService, micro.APIPrefix+".*."+MicroService+"."+p.id)
}

// startMicro subscribes the micro subjects.
func (p *Peer) startMicro() error {
	for _, subj := range p.microSubjects() {
		sub, err := p.nc.Subscribe(subj, p.handleMicro)
		if err != nil {
			return fmt.Errorf("peer: subscribe %s: %w", subj, err)
		}
		p.mu.Lock()
		p.microSubs = append(p.microSubs, sub)
		p.mu.Unlock()
	}
	return nil
}

// identity is the peer's micro service identity.
func (p *Peer) identity() micro.ServiceIdentity {
	info := p.Info()
	md := map[string]string{"peer_name": info.Name, "host": info.Host}
	if info.Group != "" {
		md["group"] = info.Group
	}
	if info.Node != "" {
		md["node"] = info.Node
	}
	return micro.ServiceIdentity{Name: MicroService, ID: p.id, Version: MicroVersion, Metadata: md}
}

// handleMicro answers one micro request. A malformed request (a verb
// other than PING, INFO and STATS, or a payload that is not empty or a
// JSON object) gets an error reply with the micro error headers.
func (p *Peer) handleMicro(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	verb, _, _ := strings.Cut(strings.TrimPrefix(m.Subject, micro.APIPrefix+"."), ".")
	if d := strings.TrimSpace(string(m.Data)); d != "" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(m.Data, &obj); err != nil {
			p.microError(m, "400", "peerbus: a micro request takes no payload or a JSON object")
			return
		}
	}
	var v any
	switch verb {
	case "PING":
		v = micro.Ping{ServiceIdentity: p.identity(), Type: micro.PingResponseType}
	case "INFO":
		v = p.microInfo()
	case "STATS":
		v = p.microStats()
	default:
		p.microError(m, "400", fmt.Sprintf("peerbus: unknown micro verb %q (want PING, INFO or STATS)", verb))
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		p.microError(m, "500", err.Error())
		return
	}
	if err := p.nc.Publish(ReplySubject(m.Reply, p.id), data); err != nil {
		p.ReportError(fmt.Errorf("peer: micro reply: %w", err))
	}
}

// microError replies with a micro error: the description and code in the
// headers, as micro services do.
func (p *Peer) microError(m *nats.Msg, code, description string) {
	r := &nats.Msg{Subject: ReplySubject(m.Reply, p.id), Header: nats.Header{micro.ErrorHeader: {description}, micro.ErrorCodeHeader: {code}}}
	if err := p.nc.PublishMsg(r); err != nil {
		p.ReportError(fmt.Errorf("peer: micro reply: %w", err))
	}
}

// tagSubjects are a tag's subjects for micro endpoint metadata.
func (p *Peer) tagSubjects(tag string) map[string]string {
	md := map[string]string{"call": CallSubject(p.id, tag), "all": AllSubject(tag)}
	if p.opts.Group != "" {
		md["group_any"] = GroupAnySubject(p.opts.Group, tag)
	}
	return md
}

// microInfo is the INFO reply: one endpoint per tag, on its any subject.
func (p *Peer) microInfo() micro.Info {
	info := micro.Info{ServiceIdentity: p.identity(), Type: micro.InfoResponseType,
		Description: "peerbus peer " + p.opts.Name, Endpoints: []micro.EndpointInfo{}}
	tags := p.Tags()
	slices.Sort(tags)
	for _, tag := range tags {
		info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: tag, Subject: AnySubject(tag),
			QueueGroup: queueGroup, Metadata: p.tagSubjects(tag)})
	}
	return info
}

// microStats is the STATS reply.
func (p *Peer) microStats() micro.Stats {
	st := micro.Stats{ServiceIdentity: p.identity(), Type: micro.StatsResponseType,
		Started: p.info.Started, Endpoints: []*micro.EndpointStats{}}
	for _, ts := range p.Stats() {
		d := MicroStatsData{InFlight: ts.InFlight, ErrorsByCode: ts.ErrorsByCode,
			P50: int64(ts.Latency.Quantile(0.5)), P90: int64(ts.Latency.Quantile(0.9)), P99: int64(ts.Latency.Quantile(0.99))}
		for i, c := range ts.Latency {
			if c > 0 {
				if d.Latency == nil {
					d.Latency = map[string]uint64{}
				}
				d.Latency[fmt.Sprint(i)] = c
			}
		}
		data, _ := json.Marshal(d) // plain fields: cannot fail
		st.Endpoints = append(st.Endpoints, &micro.EndpointStats{Name: ts.Tag, Subject: AnySubject(ts.Tag),
			QueueGroup: queueGroup, NumRequests: int(ts.Calls), NumErrors: int(ts.Errors), LastError: ts.LastError,
			ProcessingTime: ts.Time, AverageProcessingTime: ts.Mean(), Data: data})
	}
	return st
}
