package peer

import "encoding/json"

// Codec encodes call arguments, results and event payloads. The default
// is JSON. Both ends of a call must use the same codec; a request names
// its codec in the Peerbus-Codec header (a request without it is JSON).
// Error replies are always JSON.
type Codec interface {
	// Name identifies the codec on the wire (e.g. "json").
	Name() string
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v (a pointer).
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec. A json.RawMessage value passes through
// unchanged.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Name() string                    { return "json" }
func (jsonCodec) Marshal(v any) ([]byte, error)   { return json.Marshal(v) }
func (jsonCodec) Unmarshal(d []byte, v any) error { return json.Unmarshal(d, v) }
