package limits

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidConfig matches every configuration error from New, Validate,
	// Policies, the Parse functions, NewIPExtractor and the middleware's
	// ToMiddleware. Those errors are *ConfigError values: use errors.As to
	// learn which field or input is at fault.
	ErrInvalidConfig = errors.New("limits: invalid config")
	// ErrUnknownBucket: the bucket is not in the configuration.
	ErrUnknownBucket = errors.New("limits: unknown bucket")
	// ErrInvalidCost: AllowN with n < 1 or n above the bucket's limit (such a
	// request could never be admitted, so it is refused before Redis).
	ErrInvalidCost = errors.New("limits: invalid cost")
	// ErrNoIdentity: the identifier is empty.
	ErrNoIdentity = errors.New("limits: empty identifier")
	// ErrResetNotPublished: Reset cleared the window in Redis but could not
	// tell the other instances (see Listen).
	ErrResetNotPublished = errors.New("limits: reset done but not published")
)

// Fields and inputs a ConfigError names besides the Config fields.
const (
	// FieldIPSource is the IP source mode of NewIPExtractor/ParseIPSource.
	FieldIPSource = "IPSource"
	// FieldTrustedProxies is the trusted proxy ranges of
	// NewIPExtractor/ParseIPSource; such errors also match ErrTrustedProxies.
	FieldTrustedProxies = "TrustedProxies"
	// FieldFailClosed is the input of ParseFailClosed.
	FieldFailClosed = "FailClosed"
)

// ConfigError is a configuration error. Field names the Config field at
// fault ("Client", "Prefix", "Tiers", "Buckets", "Overrides", "Failure",
// "Leases", "Timeout", "HashKey", …), or the input of a Parse function
// ("Overrides" for ParseOverrides, "Leases", "Failure", FieldFailClosed,
// FieldIPSource, FieldTrustedProxies), so a caller can say which setting to
// fix without reading the message. It matches ErrInvalidConfig.
type ConfigError struct {
	// Field is the Config field or Parse input at fault.
	Field string
	// Name is the tier, bucket or list item at fault, when there is one.
	Name string
	// Reason says what is wrong, naming the item; it never contains a
	// secret (HashKey errors give lengths only).
	Reason string
	// Err is the underlying error, if any (e.g. ErrTrustedProxies or a
	// parse error).
	Err error
}

func (e *ConfigError) Error() string {
	return ErrInvalidConfig.Error() + ": " + e.Field + ": " + e.Reason
}

// Is makes every ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// configErr builds a ConfigError; a %w verb in format sets Err.
func configErr(field, name, format string, a ...any) *ConfigError {
	err := fmt.Errorf(format, a...)
	return &ConfigError{Field: field, Name: name, Reason: err.Error(), Err: errors.Unwrap(err)}
}
