package keyscan

import (
	"context"
	"time"
)

// SetPause replaces the wait between round trips until the returned
// function restores it. Not for parallel tests.
func SetPause(f func(ctx context.Context, d time.Duration) error) (restore func()) {
	old := pause
	pause = f
	return func() { pause = old }
}
