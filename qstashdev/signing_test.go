package qstashdev

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSignTokenMatchesReferenceVectors checks the token against the vectors of
// docs/qstash-protocol.md §5.5, which pass the official JS Receiver.
func TestSignTokenMatchesReferenceVectors(t *testing.T) {
	t.Parallel()
	now := time.Unix(1700000000, 0)
	const jti = "jwt_TestVector0000000000001"
	tests := []struct {
		name string
		key  string
		url  string
		body string
		nbf  int64
		want string
	}{
		{
			name: "V1 current key",
			key:  DevCurrentSigningKey, url: "https://example.com/api/webhook", body: `{"hello":"world"}`, nbf: 1700000000,
			want: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjoxNzAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiJrNkk1Y2FrVTVlckw4S2pTVVZUTm93bkR3Y2N2dTVrVTFIeGc4OHRvRllnPSJ9.9S3l-jeQHcsPKpzXLYE7gKe-S_mxtiU1c6ECNu3hCS4",
		},
		{
			name: "V2 next key",
			key:  DevNextSigningKey, url: "https://example.com/api/webhook", body: `{"hello":"world"}`, nbf: 1700000000,
			want: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjoxNzAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiJrNkk1Y2FrVTVlckw4S2pTVVZUTm93bkR3Y2N2dTVrVTFIeGc4OHRvRllnPSJ9.NcxPmrUP0ugCMl87nfw2Al2YmIk4QtMV6JqCubCRcVw",
		},
		{
			name: "V4 empty body nbf 0",
			key:  DevCurrentSigningKey, url: "https://example.com/api/webhook", body: "", nbf: 0,
			want: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjowLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiI0N0RFUXBqOEhCU2EtX1RJbVctNUpDZXVRZVJrbTVOTXBKV1pHM2hTdUZVPSJ9.tUm8SQEVmFTuwzihZH1dMwctEGR-4-xAahw74uDc3j0",
		},
		{
			name: "V5 binary body",
			key:  DevCurrentSigningKey, url: "https://example.com/api/webhook", body: "\x00\xff\x10\x80", nbf: 0,
			want: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjowLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiJvenV5cnRkWHZJT1lCOWVwM3FzR2lNUFBCdE51VTh0Q2p5NVRuSTNIYkZzPSJ9.32bNdqWHpm449Nv3avmVmJCOcKECFCdrfXaA5HGBvHU",
		},
		{
			name: "V6 url with query",
			key:  DevCurrentSigningKey, url: "https://example.com/api/webhook?tenant=a&x=1", body: "hello", nbf: 1700000000,
			want: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vaz90ZW5hbnQ9YSZ4PTEiLCJleHAiOjE3MDAwMDAzMDAsIm5iZiI6MTcwMDAwMDAwMCwiaWF0IjoxNzAwMDAwMDAwLCJqdGkiOiJqd3RfVGVzdFZlY3RvcjAwMDAwMDAwMDAwMDEiLCJib2R5IjoiTFBKTnVsLXdvdzRtNkRzcXhibmluaHNXSGx3ZnAwSmVjd1F6WXBPTG1DUT0ifQ.5Y5QIk0OU0LOHwG9cmjMiNJg9ACBIrCUJCeTanhgdJw",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := signToken(tt.key, tt.url, []byte(tt.body), now, jti, tt.nbf)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("token mismatch\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestAppendJSONStringMatchesEncodingJSON: the token's hand-built claims
// quote strings exactly as encoding/json does with HTML escaping off.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, v := range []string{
		"", "https://example.com/api/webhook?tenant=a&x=1", `a"b\c`, "tab\there", "nl\n", "\x00\x1f\x7f",
		"<script>&", "é ü 日本", "\u2028\u2029", "bad\xffutf8", "http://[::1]:8080/jobs/demo.hello",
	} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(buf.String(), "\n")
		if got := string(appendJSONString(nil, v)); got != want {
			t.Errorf("appendJSONString(%q) = %s, want %s", v, got, want)
		}
	}
}

func BenchmarkSignToken(b *testing.B) {
	now := time.Unix(1700000000, 0)
	body := []byte(`{"name":"bench"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signToken(DevCurrentSigningKey, "http://127.0.0.1:3001/jobs/demo.hello", body, now, "jwt_TestVector0000000000001", 0); err != nil {
			b.Fatal(err)
		}
	}
}
