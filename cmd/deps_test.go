package cmd_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The dependency rules of docs/architecture.md, checked on what the
// packages really link: a user who imports one package gets nothing the
// concern does not need.
func TestDependencyRules(t *testing.T) {
	t.Parallel()
	const mod = "github.com/digis/jobworker/"
	tests := []struct {
		pkg    string
		banned []string
	}{
		// A verifier needs neither Redis nor the publish client.
		{"webhooks", []string{"github.com/redis/go-redis", "github.com/upstash/qstash-go", mod + "jobs", mod + "idempotency"}},
		// The API enqueues and answers people; Stripe is the worker's business.
		{"cmd/api", []string{"github.com/stripe/stripe-go", mod + "webhooks", mod + "worker"}},
		// The building blocks know nothing of jobs, webhooks or the app.
		{"limits", []string{mod + "jobs", mod + "webhooks", mod + "worker", mod + "internal/store", mod + "internal/appjobs"}},
		{"idempotency", []string{mod + "jobs", mod + "webhooks", mod + "worker", mod + "internal/store"}},
		{"cache", []string{mod + "jobs", mod + "webhooks", mod + "worker", mod + "internal/store"}},
		{"jobs", []string{mod + "webhooks", mod + "worker", "github.com/stripe/stripe-go", "github.com/redis/go-redis"}},
		// Job control talks to QStash only: an ops tool gets no Redis, no worker, no app.
		{"jobs/control", []string{mod + "webhooks", mod + "worker", mod + "internal/appjobs", mod + "internal/store", "github.com/redis/go-redis"}},
		// The worker kit is public: no reference application inside.
		{"worker", []string{mod + "internal/appjobs", mod + "internal/store", mod + "internal/workerapp"}},
		{"server", []string{mod + "internal/env", mod + "internal/apiapp", mod + "internal/workerapp"}},
		{"outbox", []string{mod + "internal/store", mod + "internal/appjobs", mod + "webhooks"}},
		// The console is the worker's; the API only flushes its numbers.
		{"cmd/api", []string{mod + "internal/opsconsole", mod + "internal/opsadapter"}},
		// The console shows what its sources give it (QStash through an
		// interface): no QStash client, nothing of the app.
		{"internal/opsconsole", []string{mod + "jobs", mod + "internal/appjobs", mod + "internal/store", mod + "worker"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command("go", "list", "-deps", "../"+tt.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps ./%s: %v\n%s", tt.pkg, err, out)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, b := range tt.banned {
					if dep == b || strings.HasPrefix(dep, b+"/") {
						t.Errorf("./%s links %s", tt.pkg, dep)
					}
				}
			}
		})
	}
}
