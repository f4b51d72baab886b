package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/metrictest"

	"github.com/prometheus/client_golang/prometheus"
)

type testArgs struct {
	ID    string `json:"id"`
	Count int    `json:"count"`
}

func (testArgs) Kind() string { return "test.job" }

func (a testArgs) Validate() error {
	if a.Count < 0 {
		return errors.New("count must not be negative")
	}
	return nil
}

type ptrArgs struct{ N int }

func (*ptrArgs) Kind() string { return "test.pointer" }

type badNameArgs struct{}

func (badNameArgs) Kind() string { return "Bad Name" }

type strictArgs struct {
	ID string `json:"id"`
}

func (strictArgs) Kind() string { return "test.strict" }

// metricValue reads one sample from reg; 0 when absent.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := metrictest.Value(t, reg, name, labels)
	return v
}

func TestRegister(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, *Job[testArgs]) error { return nil }
	tests := []struct {
		name    string
		when    func(r *Registry) error
		wantErr error // nil: success; errAny: any error
	}{
		{"first", func(r *Registry) error { return Register(r, noop) }, nil},
		{"duplicate", func(r *Registry) error {
			_ = Register(r, noop)
			return Register(r, noop, WithHandlerTimeout(time.Second))
		}, ErrDuplicateJob},
		{"invalid name", func(r *Registry) error {
			return Register(r, func(context.Context, *Job[badNameArgs]) error { return nil })
		}, ErrInvalidName},
		{"pointer args", func(r *Registry) error {
			return Register(r, func(context.Context, *Job[*ptrArgs]) error { return nil })
		}, nil},
		{"interface args", func(r *Registry) error {
			return Register(r, func(context.Context, *Job[Args]) error { return nil })
		}, errAny},
		{"nil handler", func(r *Registry) error { return Register[testArgs](r, nil) }, errAny},
		{"nil registry", func(*Registry) error { return Register(nil, noop) }, errAny},
		{"bad timeout", func(r *Registry) error { return Register(r, noop, WithHandlerTimeout(-1)) }, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewRegistry(RegistryConfig{})
			if err != nil {
				t.Fatal(err)
			}
			err = tt.when(r)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tt.wantErr == errAny && err == nil:
				t.Fatal("err = nil, want an error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestNewRegistryValidates(t *testing.T) {
	t.Parallel()
	if _, err := NewRegistry(RegistryConfig{DefaultTimeout: -time.Second}); err == nil {
		t.Fatal("negative DefaultTimeout accepted")
	}
}

func TestDispatch(t *testing.T) {
	t.Parallel()
	cause := errors.New("upstream down")
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	delivery := Delivery{MessageID: "msg_1", Retried: 1, Traceparent: tp}

	type seen struct {
		job         Job[testArgs]
		deadline    time.Duration
		traceparent string
	}
	tests := []struct {
		name      string
		job       string
		body      string
		handler   func(context.Context, *Job[testArgs]) error
		wantClass class
		wantIs    []error
		wantRun   bool
	}{
		{name: "ok", job: "test.job", body: `{"id":"a","count":2}`, wantClass: classOK, wantRun: true},
		{name: "unknown fields ignored", job: "test.job", body: `{"id":"a","new_field":1}`, wantClass: classOK, wantRun: true},
		{name: "whitespace around", job: "test.job", body: " \n{\"id\":\"a\"}\n ", wantClass: classOK, wantRun: true},
		{name: "unknown job", job: "nope.job", body: `{}`, wantClass: classPermanent, wantIs: []error{ErrUnknownJob}},
		{name: "empty body", job: "test.job", body: ``, wantClass: classPermanent, wantIs: []error{ErrBadPayload}},
		{name: "not json", job: "test.job", body: `id=a`, wantClass: classPermanent, wantIs: []error{ErrBadPayload}},
		{name: "type mismatch", job: "test.job", body: `{"count":"two"}`, wantClass: classPermanent, wantIs: []error{ErrBadPayload}},
		{name: "trailing data", job: "test.job", body: `{"id":"a"}{"id":"b"}`, wantClass: classPermanent, wantIs: []error{ErrBadPayload}},
		{name: "array", job: "test.job", body: `[1]`, wantClass: classPermanent, wantIs: []error{ErrBadPayload}},
		{name: "validate fails", job: "test.job", body: `{"count":-1}`, wantClass: classPermanent, wantIs: []error{ErrBadPayload}},
		{name: "handler error", job: "test.job", body: `{}`, wantClass: classRetry, wantIs: []error{cause}, wantRun: true,
			handler: func(context.Context, *Job[testArgs]) error { return cause }},
		{name: "handler permanent", job: "test.job", body: `{}`, wantClass: classPermanent, wantIs: []error{cause}, wantRun: true,
			handler: func(context.Context, *Job[testArgs]) error { return Permanent(cause) }},
		{name: "handler retry after", job: "test.job", body: `{}`, wantClass: classRetry, wantIs: []error{cause}, wantRun: true,
			handler: func(context.Context, *Job[testArgs]) error { return RetryAfter(time.Minute, cause) }},
		{name: "handler panics", job: "test.job", body: `{}`, wantClass: classRetry, wantRun: true,
			handler: func(context.Context, *Job[testArgs]) error { panic("boom") }},
		{name: "handler sees its deadline", job: "test.job", body: `{}`, wantClass: classRetry, wantIs: []error{context.DeadlineExceeded}, wantRun: true,
			handler: func(ctx context.Context, _ *Job[testArgs]) error { <-ctx.Done(); return ctx.Err() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			r, err := NewRegistry(RegistryConfig{Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			var got *seen
			timeout := 200 * time.Millisecond
			err = Register(r, func(ctx context.Context, j *Job[testArgs]) error {
				dl, _ := ctx.Deadline()
				got = &seen{job: *j, deadline: time.Until(dl), traceparent: TraceparentFromContext(ctx)}
				if tt.handler != nil {
					return tt.handler(ctx, j)
				}
				return nil
			}, WithHandlerTimeout(timeout))
			if err != nil {
				t.Fatal(err)
			}

			err = r.Dispatch(context.Background(), tt.job, delivery, []byte(tt.body))

			if c := classify(err); c != tt.wantClass {
				t.Fatalf("class = %v (err %v), want %v", c, err, tt.wantClass)
			}
			for _, target := range tt.wantIs {
				if !errors.Is(err, target) {
					t.Errorf("err = %v, want errors.Is %v", err, target)
				}
			}
			if (got != nil) != tt.wantRun {
				t.Fatalf("handler ran = %v, want %v", got != nil, tt.wantRun)
			}
			if got != nil {
				if got.job.Delivery != delivery {
					t.Errorf("delivery = %+v, want %+v", got.job.Delivery, delivery)
				}
				if got.deadline <= 0 || got.deadline > timeout {
					t.Errorf("handler deadline in %v, want within (0, %v]", got.deadline, timeout)
				}
				if got.traceparent != tp {
					t.Errorf("traceparent on ctx = %q", got.traceparent)
				}
			}
			label := tt.job
			if tt.job != "test.job" {
				label = "_unknown"
			}
			outcome := tt.wantClass.String()
			if tt.name == "handler panics" {
				outcome = "panic"
			}
			if v := metricValue(t, reg, "jobworker_jobs_handled_total", map[string]string{"job": label, "outcome": outcome}); v != 1 {
				t.Errorf("handled_total{job=%q,outcome=%q} = %v, want 1", label, outcome, v)
			}
		})
	}
}

func TestDispatchPanicError(t *testing.T) {
	t.Parallel()
	r, _ := NewRegistry(RegistryConfig{})
	cause := errors.New("nil map")
	_ = Register(r, func(context.Context, *Job[testArgs]) error { panic(cause) })
	err := r.Dispatch(context.Background(), "test.job", Delivery{}, []byte(`{}`))
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *PanicError", err)
	}
	if pe.Job != "test.job" || !errors.Is(err, cause) || !strings.Contains(string(pe.Stack), "registry_test.go") {
		t.Errorf("PanicError = %+v", pe)
	}
}

func TestDispatchStrictFields(t *testing.T) {
	t.Parallel()
	r, _ := NewRegistry(RegistryConfig{})
	if err := Register(r, func(context.Context, *Job[strictArgs]) error { return nil }, WithDisallowUnknownFields()); err != nil {
		t.Fatal(err)
	}
	if err := r.Dispatch(context.Background(), "test.strict", Delivery{}, []byte(`{"id":"a"}`)); err != nil {
		t.Errorf("known fields: %v", err)
	}
	err := r.Dispatch(context.Background(), "test.strict", Delivery{}, []byte(`{"id":"a","extra":1}`))
	if !errors.Is(err, ErrBadPayload) || !IsPermanent(err) {
		t.Errorf("unknown field: %v, want permanent ErrBadPayload", err)
	}
}

func TestDispatchPointerArgs(t *testing.T) {
	t.Parallel()
	r, _ := NewRegistry(RegistryConfig{})
	var got int
	_ = Register(r, func(_ context.Context, j *Job[*ptrArgs]) error { got = j.Args.N; return nil })
	if err := r.Dispatch(context.Background(), "test.pointer", Delivery{}, []byte(`{"N":7}`)); err != nil || got != 7 {
		t.Fatalf("err = %v, got = %d", err, got)
	}
}

func TestDispatchDefaultTimeoutAndCallerDeadline(t *testing.T) {
	t.Parallel()
	r, _ := NewRegistry(RegistryConfig{DefaultTimeout: time.Hour})
	var deadline time.Duration
	_ = Register(r, func(ctx context.Context, _ *Job[testArgs]) error {
		dl, _ := ctx.Deadline()
		deadline = time.Until(dl)
		return nil
	})
	if d, ok := r.Timeout("test.job"); !ok || d != time.Hour {
		t.Fatalf("Timeout = %v, %v", d, ok)
	}
	if _, ok := r.Timeout("nope"); ok {
		t.Fatal("Timeout of unknown job reported")
	}
	// The caller's shorter deadline wins over the job's.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = r.Dispatch(ctx, "test.job", Delivery{}, []byte(`{}`))
	if deadline <= 0 || deadline > time.Minute {
		t.Errorf("deadline in %v, want <= 1m", deadline)
	}
}

func TestKinds(t *testing.T) {
	t.Parallel()
	r, _ := NewRegistry(RegistryConfig{})
	_ = Register(r, func(context.Context, *Job[testArgs]) error { return nil })
	_ = Register(r, func(context.Context, *Job[*ptrArgs]) error { return nil })
	if got := fmt.Sprint(r.Kinds()); got != "[test.job test.pointer]" {
		t.Errorf("Kinds = %s", got)
	}
}

func TestDispatchConcurrent(t *testing.T) {
	t.Parallel()
	r, _ := NewRegistry(RegistryConfig{Registerer: prometheus.NewRegistry()})
	var mu sync.Mutex
	count := 0
	_ = Register(r, func(context.Context, *Job[testArgs]) error { mu.Lock(); count++; mu.Unlock(); return nil })
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 50 {
				_ = r.Dispatch(context.Background(), "test.job", Delivery{}, []byte(`{"id":"x"}`))
			}
		})
	}
	wg.Go(func() { _ = Register(r, func(context.Context, *Job[strictArgs]) error { return nil }) })
	wg.Wait()
	if count != 16*50 {
		t.Errorf("count = %d", count)
	}
}

func TestTwoRegistriesShareMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := NewRegistry(RegistryConfig{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewRegistry(RegistryConfig{Registerer: reg}); err != nil {
		t.Fatalf("second registry on the same Registerer: %v", err)
	}
}

func TestDecodePayloadStrictTrailing(t *testing.T) {
	t.Parallel()
	var v strictArgs
	for _, body := range []string{`{"id":"a"} x`, `{"id":"a"}{}`, `{"id":"a"}]`} {
		if err := decodePayload([]byte(body), &v, true); err == nil {
			t.Errorf("strict decode of %q succeeded", body)
		}
		if err := decodePayload([]byte(body), &v, false); err == nil {
			t.Errorf("lenient decode of %q succeeded", body)
		}
	}
	if err := decodePayload([]byte(" {\"id\":\"a\"} \n"), &v, true); err != nil {
		t.Errorf("strict decode with whitespace: %v", err)
	}
}
