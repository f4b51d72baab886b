package auth

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/internal/validtext"
)

// invalidTextDetail is the validtext error's own message ("the token's sub
// claim contains a NUL character (U+0000)"), which never repeats the text.
func invalidTextDetail(err error) string {
	var te *validtext.Error
	if errors.As(err, &te) {
		return te.Error()
	}
	return "the token holds invalid text"
}

// userKey is where the middleware leaves the verified subject.
const userKey = "jobworker.auth.user"

// BearerConfig configures the bearer-token middleware.
type BearerConfig struct {
	// Skipper skips the middleware (the request continues anonymously).
	// Defaults to middleware.DefaultSkipper.
	Skipper middleware.Skipper
	// Authenticator verifies the tokens. Required.
	Authenticator *Authenticator
	// Optional lets requests without an Authorization header through
	// anonymously (UserID then reports false). A header that is present but
	// wrong is still a 401: a client that meant to authenticate must learn
	// it failed instead of silently getting the anonymous view.
	Optional bool
	// Realm is sent in WWW-Authenticate. Defaults to "api".
	Realm string
}

// DefaultBearerConfig is the required-token configuration without an
// Authenticator.
var DefaultBearerConfig = BearerConfig{Skipper: middleware.DefaultSkipper, Realm: "api"}

// Required is the middleware that demands a valid token (401 otherwise).
func (a *Authenticator) Required() echo.MiddlewareFunc {
	return a.mustMiddleware(false)
}

// Optional is the middleware that accepts anonymous requests but still
// refuses an invalid token.
func (a *Authenticator) Optional() echo.MiddlewareFunc {
	return a.mustMiddleware(true)
}

func (a *Authenticator) mustMiddleware(optional bool) echo.MiddlewareFunc {
	cfg := DefaultBearerConfig
	cfg.Authenticator, cfg.Optional = a, optional
	mw, err := cfg.ToMiddleware()
	if err != nil { // unreachable: the config above is valid whenever a is non-nil
		return func(echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error { return err }
		}
	}
	return mw
}

// ToMiddleware validates the configuration and builds the middleware.
//
// Security: the token is read only from the Authorization header (never a
// query parameter, which ends up in logs), the scheme is matched
// case-insensitively (RFC 6750 / RFC 9110), more than one Authorization
// header is refused, and the token is never logged.
func (config BearerConfig) ToMiddleware() (echo.MiddlewareFunc, error) {
	if config.Authenticator == nil {
		return nil, errors.New("auth: BearerConfig.Authenticator is required")
	}
	if config.Skipper == nil {
		config.Skipper = DefaultBearerConfig.Skipper
	}
	if config.Realm == "" {
		config.Realm = DefaultBearerConfig.Realm
	}
	if strings.ContainsAny(config.Realm, "\"\\\r\n") {
		return nil, errors.New("auth: BearerConfig.Realm must not contain quotes, backslashes or line breaks")
	}
	a := config.Authenticator
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if config.Skipper(c) {
				return next(c)
			}
			values := c.Request().Header.Values(echo.HeaderAuthorization)
			if len(values) == 0 {
				if config.Optional {
					return next(c)
				}
				a.rejected.WithLabelValues("missing").Inc()
				return unauthorized(c, config.Realm, false, "a bearer token is required")
			}
			token, ok := bearerToken(values)
			if !ok {
				a.rejected.WithLabelValues("malformed").Inc()
				if err := a.limitForgery(c, reject("malformed", nil)); err != nil {
					return err
				}
				return unauthorized(c, config.Realm, true, "invalid bearer token")
			}
			claims, err := a.Verify(c.Request().Context(), token)
			if errors.Is(err, ErrKeysUnavailable) {
				a.rejected.WithLabelValues("keys_unavailable").Inc()
				a.log.Warn("bearer token not checked: signing keys unavailable", "error", err.Error())
				c.Response().Header().Set(echo.HeaderRetryAfter, "5")
				return problem.Respond(c, http.StatusServiceUnavailable, "authentication temporarily unavailable")
			}
			if errors.Is(err, validtext.ErrInvalid) {
				a.rejected.WithLabelValues(Reason(err)).Inc()
				return problem.Respond(c, http.StatusBadRequest, invalidTextDetail(err))
			}
			if err != nil {
				reason := Reason(err)
				a.rejected.WithLabelValues(reason).Inc()
				a.log.Debug("bearer token rejected", "reason", reason, "path", c.Path())
				if err := a.limitForgery(c, err); err != nil {
					return err
				}
				return unauthorized(c, config.Realm, true, "invalid bearer token")
			}
			c.Set(userKey, claims.Subject)
			return next(c)
		}
	}, nil
}

// limitForgery counts a refused token against the client when it may be a
// forgery (Config.LimitForgery); a non-nil error is the answer to send
// instead of the 401.
func (a *Authenticator) limitForgery(c echo.Context, err error) error {
	if a.limit == nil || !Forgery(err) {
		return nil
	}
	return a.limit(c)
}

// bearerToken extracts the token from exactly one "Bearer <token>" header.
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || !isB64Token(token) {
		return "", false
	}
	return token, true
}

// isB64Token: RFC 6750 b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" /
// "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
			ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '+' || ch == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

func unauthorized(c echo.Context, realm string, tokenSent bool, detail string) error {
	v := `Bearer realm="` + realm + `"`
	if tokenSent {
		v += `, error="invalid_token"`
	}
	h := c.Response().Header()
	h.Set(echo.HeaderWWWAuthenticate, v)
	h.Set(echo.HeaderCacheControl, "no-store")
	return problem.Respond(c, http.StatusUnauthorized, detail)
}

// UserID is the verified subject of the request, set by the middleware;
// false for anonymous requests.
func UserID(c echo.Context) (string, bool) {
	id, ok := c.Get(userKey).(string)
	return id, ok && id != ""
}

// RequireUser returns nil when the request's user is owner, else an
// *echo.HTTPError for the server's error handler to answer: 403 for another
// user, 401 (with WWW-Authenticate set) when there is no user at all, i.e.
// the route forgot Required:
//
//	if err := auth.RequireUser(c, st.CreatorID); err != nil {
//		return err
//	}
func RequireUser(c echo.Context, owner string) error {
	id, ok := UserID(c)
	switch {
	case !ok:
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="`+DefaultBearerConfig.Realm+`"`)
		return echo.NewHTTPError(http.StatusUnauthorized, "a bearer token is required")
	case id != owner:
		return echo.NewHTTPError(http.StatusForbidden, "not allowed for this user")
	}
	return nil
}
