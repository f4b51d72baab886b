package cache

import (
	"encoding/json"
	"errors"
	"strconv"
)

// Codec turns values into bytes and back. Implementations must be safe for
// concurrent use.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default Codec (encoding/json).
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Entry format, version 'c':
//
//	byte 0       'c'
//	bytes 1-13   soft expiry, Unix ms, 13 ASCII digits (read by the Lua script)
//	bytes 14-26  serve-stale-until, Unix ms, 13 ASCII digits
//	bytes 27-    the codec's payload
//
// One GET returns freshness and value together; the hard expiry is the
// key's PX. Decimal digits keep the script's parsing to one tonumber.
const (
	envVersion  = 'c'
	envTimeLen  = 13
	envHeaderSz = 1 + 2*envTimeLen
)

type envelope struct {
	soft       int64 // fresh before this (Unix ms)
	serveUntil int64 // stale-while-revalidate window ends (Unix ms)
	payload    []byte
}

var errBadEnvelope = errors.New("cache: unrecognised entry format")

func appendTime(b []byte, ms int64) []byte {
	var d [20]byte
	s := strconv.AppendInt(d[:0], ms, 10)
	for i := len(s); i < envTimeLen; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

func encodeEnvelope(soft, serveUntil int64, payload []byte) []byte {
	b := make([]byte, 0, envHeaderSz+len(payload))
	b = append(b, envVersion)
	b = appendTime(b, soft)
	b = appendTime(b, serveUntil)
	return append(b, payload...)
}

func decodeEnvelope(b []byte) (envelope, error) {
	if len(b) < envHeaderSz || b[0] != envVersion {
		return envelope{}, errBadEnvelope
	}
	soft, err1 := strconv.ParseInt(string(b[1:1+envTimeLen]), 10, 64)
	until, err2 := strconv.ParseInt(string(b[1+envTimeLen:envHeaderSz]), 10, 64)
	if err1 != nil || err2 != nil {
		return envelope{}, errBadEnvelope
	}
	return envelope{soft: soft, serveUntil: until, payload: b[envHeaderSz:]}, nil
}
