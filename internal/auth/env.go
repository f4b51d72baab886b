package auth

import (
	"fmt"
	"strings"
)

// Environment variables read by LoadConfig.
const (
	EnvSecret   = "AUTH_JWT_SECRET"
	EnvJWKSURL  = "AUTH_JWKS_URL"
	EnvIssuer   = "AUTH_ISSUER"
	EnvAudience = "AUTH_AUDIENCE"
)

// LoadConfig reads AUTH_JWT_SECRET (HS256, at least 32 bytes) or
// AUTH_JWKS_URL (exactly one), plus optional AUTH_ISSUER and AUTH_AUDIENCE,
// and validates them. Errors name the variable, never the secret.
func LoadConfig(getenv func(string) string) (Config, error) {
	secret, jwks := getenv(EnvSecret), strings.TrimSpace(getenv(EnvJWKSURL))
	var cfg Config
	if secret != "" {
		if strings.TrimSpace(secret) == "" || secret != strings.TrimSpace(secret) {
			return Config{}, fmt.Errorf("%w: %s has leading or trailing white space", ErrInvalidConfig, EnvSecret)
		}
		if len(secret) < MinSecretLen {
			return Config{}, fmt.Errorf("%w: %s must be at least %d bytes (e.g. openssl rand -base64 48)", ErrInvalidConfig, EnvSecret, MinSecretLen)
		}
		cfg.HS256Secret = []byte(secret)
	}
	cfg.JWKSURL = jwks
	cfg.Issuer = strings.TrimSpace(getenv(EnvIssuer))
	cfg.Audience = strings.TrimSpace(getenv(EnvAudience))
	if cfg.HS256Secret == nil && cfg.JWKSURL == "" {
		return Config{}, fmt.Errorf("%w: set %s or %s", ErrInvalidConfig, EnvSecret, EnvJWKSURL)
	}
	if cfg.HS256Secret != nil && cfg.JWKSURL != "" {
		return Config{}, fmt.Errorf("%w: set only one of %s and %s", ErrInvalidConfig, EnvSecret, EnvJWKSURL)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w (%s/%s)", err, EnvSecret, EnvJWKSURL)
	}
	return cfg, nil
}
