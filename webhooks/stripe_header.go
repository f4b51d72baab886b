package webhooks

import (
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// Bounds on a Stripe-Signature header. Stripe sends one t, one v1 per
// active endpoint secret (two while a secret is being rolled) and, in test
// mode, a v0; the caps refuse headers built to make us hash thousands of
// candidates.
const (
	MaxStripeSignatureHeaderBytes = 4 << 10
	MaxStripeV1Signatures         = 8
)

const sourceStripe = "stripe"

// stripeSignatureHeader is a parsed Stripe-Signature header.
type stripeSignatureHeader struct {
	// Timestamp is t, the signing time.
	Timestamp time.Time
	// V1 are the decoded v1 signatures (32 bytes each). Other schemes,
	// including the test-mode v0, are ignored: accepting them would allow
	// a downgrade.
	V1 [][]byte
}

// parseStripeSignatureHeader parses "t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]".
// It is stricter than stripe-go: exactly one t, made of 1–18 ASCII digits;
// every pair has exactly one '='; every v1 is 64 hex digits; at most
// MaxStripeV1Signatures v1 entries and MaxStripeSignatureHeaderBytes bytes.
// Unknown keys are ignored, like Stripe says to (so " v1" after a space is
// an unknown key, as in stripe-go). Errors are *VerificationError with
// Check missing, malformed or scheme.
func parseStripeSignatureHeader(header string) (stripeSignatureHeader, error) {
	var h stripeSignatureHeader
	fail := func(check string) (stripeSignatureHeader, error) {
		return stripeSignatureHeader{}, newVerificationError(sourceStripe, check, nil)
	}
	if strings.TrimSpace(header) == "" {
		return fail(CheckMissing)
	}
	if len(header) > MaxStripeSignatureHeaderBytes {
		return fail(CheckMalformed)
	}
	var sawT bool
	for pair := range strings.SplitSeq(header, ",") {
		key, value, ok := strings.Cut(pair, "=")
		if !ok || key == "" || strings.Contains(value, "=") {
			return fail(CheckMalformed)
		}
		switch key {
		case "t":
			if sawT || !isDigits(value, 18) {
				return fail(CheckMalformed)
			}
			sec, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return fail(CheckMalformed)
			}
			h.Timestamp = time.Unix(sec, 0)
			sawT = true
		case "v1":
			if len(value) != 64 || len(h.V1) == MaxStripeV1Signatures {
				return fail(CheckMalformed)
			}
			sig, err := hex.DecodeString(value)
			if err != nil {
				return fail(CheckMalformed)
			}
			h.V1 = append(h.V1, sig)
		}
	}
	if !sawT {
		return fail(CheckMalformed)
	}
	if len(h.V1) == 0 {
		return fail(CheckScheme)
	}
	return h, nil
}

func isDigits(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
