package auth_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/auth"
)

func Example() {
	secret := []byte("example-secret-example-secret-32")
	a, err := auth.New(auth.Config{HS256Secret: secret})
	if err != nil {
		panic(err)
	}
	defer a.Close()

	e := echo.New()
	e.GET("/me", func(c echo.Context) error {
		user, _ := auth.UserID(c)
		return c.String(http.StatusOK, user)
	}, a.Required())

	token, _ := auth.DevToken(secret, "demo-fan", time.Hour) // what the local stack prints
	for _, header := range []string{"Bearer " + token, ""} {
		req := httptest.NewRequest(http.MethodGet, "/me", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		fmt.Printf("%d %t %q\n", rec.Code, rec.Body.String() == "demo-fan", rec.Header().Get("WWW-Authenticate"))
	}
	// Output:
	// 200 true ""
	// 401 false "Bearer realm=\"api\""
}
