package webhooks

// The parsers are internal; the fuzz targets (package webhooks_test) reach
// them through these names, which exist only in test builds.
var (
	ParseQStashSignatureForTest       = parseQStashSignature
	ParseStripeSignatureHeaderForTest = parseStripeSignatureHeader
)
