package peer

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzParseReply feeds arbitrary reply messages to the caller's decoder:
// it must never panic, and every result is either data (status ok), a
// *RemoteError, or a decode error.
func FuzzParseReply(f *testing.F) {
	f.Add("ok", []byte(`50`))
	f.Add("error", []byte(`{"peer":"p","tag":"t","code":"error","type":"*errors.errorString","message":"boom","stack":"x"}`))
	f.Add("error", []byte(`{"code":"no_such_tag","tags":["info","ping"]}`))
	f.Add("error", []byte(`{"code":""}`))
	f.Add("error", []byte(`not json`))
	f.Add("", []byte(nil))
	f.Add("503", []byte(nil))
	f.Fuzz(func(t *testing.T, status string, data []byte) {
		m := nats.NewMsg("inbox")
		if status == "503" {
			m.Header.Set("Status", "503")
		} else {
			m.Header.Set(HeaderStatus, status)
		}
		m.Data = data
		out, err := parseReply(m)
		switch {
		case err == nil:
			if status != "ok" {
				t.Fatalf("status %q accepted as success", status)
			}
			if string(out) != string(data) {
				t.Fatal("data changed")
			}
		default:
			var re *RemoteError
			if errors.As(err, &re) {
				if status != "error" || re.Code == "" {
					t.Fatalf("remote error from status %q: %+v", status, re)
				}
				_ = re.Error()
			}
		}
	})
}
