package server_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/server"
)

// A handler puts what it has to say about a request that went well on the
// request's one access line, instead of writing a second line.
func ExampleAddLogAttrs() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "duration_us" {
				return slog.Attr{} // vary from run to run
			}
			return a
		},
	}))
	s, err := server.New(server.Config{Name: "demo", Logger: log})
	if err != nil {
		panic(err)
	}
	s.Echo.POST("/tips", func(c echo.Context) error {
		server.AddLogAttrs(c.Request().Context(), slog.Int64("tip_id", 42))
		return c.NoContent(http.StatusCreated)
	})
	req := httptest.NewRequest(http.MethodPost, "/tips", nil)
	req.Header.Set("X-Request-Id", "req-1")
	s.Echo.ServeHTTP(httptest.NewRecorder(), req)
	// Output:
	// {"level":"INFO","msg":"request","server":"demo","request_id":"req-1","method":"POST","route":"/tips","status":201,"bytes_out":0,"tip_id":42}
}
