package webhooks

// The parsers are internal; the fuzz targets (package webhooks_test) reach
// them through these names, which exist only in test builds.
var (
	ParseQStashSignatureForTest       = parseQStashSignature
	ParseStripeSignatureHeaderForTest = parseStripeSignatureHeader
)

// QStashJSONForTest is what the token's small JSON decoder read: the
// claims (ok false when it refused them) and the header.
type QStashJSONForTest struct {
	Iss, Sub, Jti, Body string
	Exp, Nbf, Iat       int64
	HasAll              bool

	Alg, Typ       string
	HasAlg, HasTyp bool
	HasExt         bool
}

// DecodeQStashClaimsForTest runs the claims decoder.
func DecodeQStashClaimsForTest(b []byte) (QStashJSONForTest, bool) {
	c, err := decodeQStashClaims(b)
	return QStashJSONForTest{Iss: c.Iss, Sub: c.Sub, Jti: c.Jti, Body: c.Body,
		Exp: c.Exp, Nbf: c.Nbf, Iat: c.Iat, HasAll: c.have == claimAll}, err == nil
}

// DecodeQStashHeaderForTest runs the header decoder.
func DecodeQStashHeaderForTest(b []byte) (QStashJSONForTest, bool) {
	h, err := decodeQStashHeader(b)
	return QStashJSONForTest{Alg: h.Alg, Typ: h.Typ, HasAlg: h.hasAlg, HasTyp: h.hasTyp, HasExt: h.hasExt}, err == nil
}
