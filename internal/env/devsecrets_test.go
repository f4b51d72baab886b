package env

import (
	"testing"

	"github.com/digis/jobworker/qstashdev"
)

// TestDevSecretsMatchTheirSources: the list repeats qstashdev's published
// credentials instead of linking the dev server into the binaries; this
// keeps the copies in step.
func TestDevSecretsMatchTheirSources(t *testing.T) {
	t.Parallel()
	for _, s := range []string{qstashdev.DevToken, qstashdev.DevCurrentSigningKey, qstashdev.DevNextSigningKey, DevJWTSecret} {
		if !devSecrets[s] {
			t.Errorf("a published development secret is missing from the list (%d bytes)", len(s))
		}
	}
}
