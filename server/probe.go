package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Probe is the binaries' -healthcheck mode, for container health checks in
// images that have no shell or curl: it GETs /readyz on the local port taken
// from $PORT (or defaultPort) and returns the process exit code, 0 when ready.
func Probe(defaultPort int) int {
	port := defaultPort
	if v := strings.TrimSpace(os.Getenv("PORT")); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "healthcheck: PORT is not a number")
			return 2
		}
		port = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/readyz", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck: /readyz answered", res.StatusCode)
		return 1
	}
	return 0
}

// IsProbe reports whether the command line asks for the -healthcheck mode.
func IsProbe(args []string) bool {
	return len(args) == 2 && (args[1] == "-healthcheck" || args[1] == "--healthcheck")
}
