package limits

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

// quietLogger drops go-redis's internal dial-retry chatter, which the
// failure tests provoke on purpose.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...interface{}) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	switch os.Getenv(helperEnv) {
	case "":
	case helperServe:
		os.Exit(serveMain())
	case helperBurn:
		os.Exit(burnMain())
	default:
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}
