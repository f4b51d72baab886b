package env

// DevelopmentVar is the development switch: JOBWORKER_ENV=development lets a
// binary start with the published development secrets below (what make dev
// and deploy/compose.yaml use). Unset, or "production", they are refused.
const DevelopmentVar = "JOBWORKER_ENV"

// DevJWTSecret is the local stack's AUTH_JWT_SECRET (cmd/dev). It is public
// by design, so a production API must never accept it.
const DevJWTSecret = "jobworker-local-development-secret-not-for-production"

// devSecrets are the secrets published in this repository and by QStash's
// own development server: anyone can sign a token, a delivery or a Stripe
// event with them. qstashdev's keys are repeated here rather than imported,
// so the binaries link no dev server; a test keeps them in step.
var devSecrets = map[string]bool{
	DevJWTSecret: true,
	// deploy/compose.yaml's AUTH_JWT_SECRET default.
	"local-development-only-jwt-secret-not-for-production": true,
	// qstashdev.DevToken, DevCurrentSigningKey and DevNextSigningKey.
	"eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=": true,
	"sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r":                                         true,
	"sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs":                                         true,
	// The local stack's STRIPE_WEBHOOK_SECRET.
	"whsec_local_development_only": true,
}

// Development reports whether JOBWORKER_ENV=development. Unset and
// "production" mean production; any other value is an error, so a typo
// cannot quietly switch the guard off or on.
func (r *Reader) Development() bool {
	switch v := r.getenv(DevelopmentVar); v {
	case "development":
		return true
	case "", "production":
		return false
	default:
		r.Fail(DevelopmentVar, "must be development or production (or unset: production)")
		return false
	}
}

// RefuseDevSecret fails name when value is one of the published
// development secrets and JOBWORKER_ENV is not development. The message
// names the variable only, never the value.
func (r *Reader) RefuseDevSecret(name, value string) {
	if devSecrets[value] && !r.Development() {
		r.Fail(name, "is a published development secret; set a secret of your own (or %s=development on a development machine)", DevelopmentVar)
	}
}
