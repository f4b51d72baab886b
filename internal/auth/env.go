package auth

import (
	"errors"
	"strconv"
	"strings"
)

// Environment variables read by LoadConfig.
const (
	EnvSecret   = "AUTH_JWT_SECRET"
	EnvJWKSURL  = "AUTH_JWKS_URL"
	EnvIssuer   = "AUTH_ISSUER"
	EnvAudience = "AUTH_AUDIENCE"
)

// EnvError is a bad AUTH_* variable: Var names it, Reason says what is
// wrong without the value. It matches ErrInvalidConfig with errors.Is.
type EnvError struct {
	Var, Reason string
}

func (e *EnvError) Error() string { return ErrInvalidConfig.Error() + ": " + e.Var + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *EnvError) Is(target error) bool { return target == ErrInvalidConfig }

// LoadConfig reads AUTH_JWT_SECRET (HS256, at least 32 bytes) or
// AUTH_JWKS_URL (exactly one), plus optional AUTH_ISSUER and AUTH_AUDIENCE,
// and validates them. Errors are *EnvError: they name the variable, never
// the secret.
func LoadConfig(getenv func(string) string) (Config, error) {
	secret, jwks := getenv(EnvSecret), strings.TrimSpace(getenv(EnvJWKSURL))
	var cfg Config
	if secret != "" {
		if strings.TrimSpace(secret) == "" || secret != strings.TrimSpace(secret) {
			return Config{}, &EnvError{Var: EnvSecret, Reason: "has leading or trailing white space"}
		}
		if len(secret) < MinSecretLen {
			return Config{}, &EnvError{Var: EnvSecret, Reason: "must be at least " + strconv.Itoa(MinSecretLen) + " bytes (e.g. openssl rand -base64 48)"}
		}
		cfg.HS256Secret = []byte(secret)
	}
	cfg.JWKSURL = jwks
	cfg.Issuer = strings.TrimSpace(getenv(EnvIssuer))
	cfg.Audience = strings.TrimSpace(getenv(EnvAudience))
	if cfg.HS256Secret == nil && cfg.JWKSURL == "" {
		return Config{}, &EnvError{Var: EnvSecret, Reason: "required: set it or " + EnvJWKSURL}
	}
	if cfg.HS256Secret != nil && cfg.JWKSURL != "" {
		return Config{}, &EnvError{Var: EnvSecret, Reason: "set only one of it and " + EnvJWKSURL}
	}
	if err := cfg.Validate(); err != nil {
		name := EnvSecret
		if cfg.JWKSURL != "" {
			name = EnvJWKSURL
		}
		reason := err.Error()
		var ce *ConfigError
		if errors.As(err, &ce) {
			reason = ce.Reason
		}
		return Config{}, &EnvError{Var: name, Reason: reason}
	}
	return cfg, nil
}
