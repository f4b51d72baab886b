package reqlog_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"

	"github.com/digis/jobworker/internal/reqlog"
)

func keys(v slog.Value) []string {
	var out []string
	for _, a := range v.Group() {
		out = append(out, a.Key)
	}
	return out
}

// Take puts the front first, then what was added, in order, past the
// inline room too; nothing added after Take is kept; without a line, Add
// says so.
func TestLine(t *testing.T) {
	t.Parallel()
	if reqlog.Add(context.Background(), slog.String("a", "b")) {
		t.Fatal("Add without a line reported it was kept")
	}
	ctx, line := reqlog.New(context.Background())
	ctx = context.WithoutCancel(ctx) // as a job's context is derived
	var want []string
	for i := range 20 {
		k := "k" + strconv.Itoa(i)
		want = append(want, k)
		if !reqlog.Add(ctx, slog.Int(k, i)) || !reqlog.Has(ctx) {
			t.Fatal("Add on a line reported it was not kept")
		}
	}
	got := keys(line.Take(slog.String("request_id", "r"), slog.Int("status", 200)))
	want = append([]string{"request_id", "status"}, want...)
	if len(got) != len(want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("keys %v, want %v", got, want)
		}
	}
	if reqlog.Add(ctx, slog.String("late", "x")) || reqlog.Has(ctx) {
		t.Fatal("Add after Take reported it was kept")
	}
}

// Parts of a request may add from several goroutines.
func TestConcurrentAdds(t *testing.T) {
	t.Parallel()
	ctx, line := reqlog.New(context.Background())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqlog.Add(ctx, slog.Int("g"+strconv.Itoa(g), g))
		}()
	}
	wg.Wait()
	if n := len(line.Take().Group()); n != 8 {
		t.Fatalf("%d attributes, want 8", n)
	}
}
