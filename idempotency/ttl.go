package idempotency

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseTTL parses a TTL from configuration (e.g. IDEMPOTENCY_RESULT_TTL):
// a Go duration ("30s", "24h") or a whole number of days ("7d"), which Go's
// time.ParseDuration lacks. The result must be positive.
func ParseTTL(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n > 3650 {
			return 0, fmt.Errorf("idempotency: invalid TTL %q: want e.g. 30s, 24h or 7d", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("idempotency: invalid TTL %q: want e.g. 30s, 24h or 7d", s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("idempotency: TTL %q must be positive", s)
	}
	return d, nil
}
