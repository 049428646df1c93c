package peer

import (
	"testing"
)

// FuzzPresenceAnswer feeds arbitrary answers to a query's gatherer, on
// the inbox and on a bound subject: it must never panic, and it keeps
// only answers within the limits, matching the query, and (bound) of
// the peer their subject names.
func FuzzPresenceAnswer(f *testing.F) {
	f.Add([]byte(`{"v":2,"rev":1,"id":"a","name":"x","tags":["info","ping"]}`), "a", "", false)
	f.Add([]byte(`{"v":2,"rev":1,"id":"a","tags":["t"]}`), "b", "t", false)
	f.Add([]byte(`{"id":"a","group":"g","hub":true}`), "", "", true)
	f.Add([]byte(`{"id":""}`), "", "", false)
	f.Add([]byte(`not json`), "a", "", false)
	f.Add([]byte(`{"rev":3}`), "a", "", false)
	f.Fuzz(func(t *testing.T, data []byte, subjID, tag string, bound bool) {
		g := &gatherer{q: PeerQuery{Tag: tag, Bound: bound}, seen: map[string]announcement{}, arrived: make(chan struct{}, 1)}
		g.take(data, subjID)
		out, err := g.result()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range out {
			if a.ID == "" || (subjID != "" && a.ID != subjID) || len(a.Tags) > MaxTags || !g.q.Match(a.Info) || len(data) > MaxInfoBytes+64 {
				t.Fatalf("kept an answer it should drop: %+v", a)
			}
		}
	})
}

// FuzzPresenceQuery feeds arbitrary queries to a peer's decoder: it
// must never panic, and an answer token it would use is one subject
// token.
func FuzzPresenceQuery(f *testing.F) {
	f.Add([]byte(`{"v":2,"tag":"t","answer":"abc"}`))
	f.Add([]byte(`{"v":2,"watch":true}`))
	f.Add([]byte(`{"v":2,"answer":"a.b"}`))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		q, ok := decodeQuery(data)
		if ok && q.Answer != "" && validToken(q.Answer) {
			s := AnswerSubject(q.Answer, "id")
			if s != subjPresence+"ans."+q.Answer+".id" {
				t.Fatalf("answer subject %q", s)
			}
			for _, c := range q.Answer {
				if c == '.' || c == '*' || c == '>' || c == ' ' {
					t.Fatalf("token %q", q.Answer)
				}
			}
		}
	})
}
