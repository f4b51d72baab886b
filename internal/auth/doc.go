// Package auth verifies `Authorization: Bearer <JWT>` for the API with jwx
// v2, against an HS256 secret or an identity provider's JWKS.
//
//	a, err := auth.New(auth.Config{HS256Secret: secret}) // or JWKSURL: "https://…/jwks.json"
//	defer a.Close()
//	e.POST("/api/tips/quick", tipHandler, a.Required())
//	e.GET("/api/streams/status", statusHandler, a.Optional())
//	// in a handler:
//	user, ok := auth.UserID(c)
//	if err := auth.RequireUser(c, stream.CreatorID); err != nil { return err } // 403
//
// The token's sub is the user id: the owner the routes compare against and
// the rate-limit identity. A missing or invalid token is a 401
// application/problem+json with WWW-Authenticate: Bearer (RFC 6750); a JWKS
// that cannot be fetched is a 503 with Retry-After, not a 401.
//
// What is checked: the header's alg is pinned (HS256 with a secret; RS256 or
// ES256 with a JWKS, never none, and never HS256 with a JWKS, which would let
// a public key act as an HMAC secret); the key's kid, type and own alg must
// match; sub and exp are required; exp, nbf and iat are checked with a small
// leeway; iss and aud when configured. Tokens are never logged: rejections
// log and count a short reason only (jobworker_auth_rejections_total).
//
// Lifecycle: with a JWKS URL, New starts a background refresher; Close
// stops it, aborting and awaiting a fetch in flight, so nothing of the
// package reaches the network afterwards. Call it at shutdown once the
// HTTP server has drained (Verify still works with the keys it has).
//
// Environment (LoadConfig): AUTH_JWT_SECRET (HS256, at least 32 bytes) or
// AUTH_JWKS_URL, plus optional AUTH_ISSUER and AUTH_AUDIENCE.
//
// jwx v2 is deprecated upstream; every jwx call is in auth.go and
// devtoken.go, so moving to v3 touches those two files only.
package auth
