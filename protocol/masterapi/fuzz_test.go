package masterapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// strictDecode decodes as the master decodes a client's params: unknown
// fields refused.
func strictDecode(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// FuzzClientParams: the params of runtime.subscribe and
// runtime.unsubscribe, decoded as the master decodes them. Decoding never
// panics, and what decodes survives a round trip unchanged (a value the
// master accepts means the same once re-encoded, e.g. in a log).
func FuzzClientParams(f *testing.F) {
	for _, s := range []string{
		`{"runtimeId":"*"}`,
		`{"runtimeId":"w:e:o","after":{"dev":5,"w:e:o/db":0},"logs":false}`,
		`{"runtimeId":"w:e:o","since":"2024-01-02T03:04:05.999999999Z","all":true}`,
		`{"runtimeId":"w:e:o","after":{"dev":-1}}`,
		`{"runtimeId":"w:e:o","since":"yesterday"}`,
		`{"subscription":"3"}`,
		`{"runtimeId":1}`, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var sp SubscribeParams
		if strictDecode(data, &sp) == nil {
			b, err := json.Marshal(sp)
			if err != nil {
				t.Fatalf("%q decoded to %+v, which does not encode: %v", data, sp, err)
			}
			var again SubscribeParams
			if err := strictDecode(b, &again); err != nil {
				t.Fatalf("re-decoding %s: %v", b, err)
			}
			if !equalSubscribe(sp, again) {
				t.Fatalf("%q: %+v after a round trip, %+v before", data, again, sp)
			}
		}
		var up UnsubscribeParams
		strictDecode(data, &up)
	})
}

// equalSubscribe compares two SubscribeParams, times by instant.
func equalSubscribe(a, b SubscribeParams) bool {
	if (a.Since == nil) != (b.Since == nil) || a.Since != nil && !a.Since.Equal(*b.Since) {
		return false
	}
	a.Since, b.Since = nil, nil
	if len(a.After) == 0 && len(b.After) == 0 {
		a.After, b.After = nil, nil
	}
	return reflect.DeepEqual(a, b)
}
