package jobs

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestMessageValidate(t *testing.T) {
	t.Parallel()
	valid := Message{Kind: "test.job", Body: `{"id":"a"}`}
	neg := -1
	tests := []struct {
		name    string
		given   func(m *Message)
		wantErr error // nil: valid
	}{
		{name: "valid", given: func(*Message) {}},
		{name: "every option", given: func(m *Message) {
			three := 3
			m.Options = MessageOptions{
				NotBefore: time.Unix(1_900_000_000, 0), Retries: &three, RetryDelay: "1000", DeduplicationID: "d",
				Callback: "https://api.example.com/cb", FailureCallback: "https://api.example.com/f",
				FlowControl: &FlowControl{Key: "k", Parallelism: 1}, Timeout: time.Second, Queue: "q", Traceparent: testTP,
			}
		}},
		{name: "bad kind", given: func(m *Message) { m.Kind = "Bad Kind" }, wantErr: ErrInvalidName},
		{name: "body not JSON", given: func(m *Message) { m.Body = "{" }, wantErr: ErrInvalidOption},
		{name: "empty body", given: func(m *Message) { m.Body = "" }, wantErr: ErrInvalidOption},
		{name: "delay and not-before", given: func(m *Message) {
			m.Options.Delay, m.Options.NotBefore = time.Second, time.Unix(1, 0)
		}, wantErr: ErrInvalidOption},
		{name: "two dedup modes", given: func(m *Message) {
			m.Options.DeduplicationID, m.Options.ContentBasedDeduplication = "d", true
		}, wantErr: ErrInvalidOption},
		{name: "negative retries", given: func(m *Message) { m.Options.Retries = &neg }, wantErr: ErrInvalidOption},
		{name: "negative delay", given: func(m *Message) { m.Options.Delay = -time.Second }, wantErr: ErrInvalidOption},
		{name: "bad queue", given: func(m *Message) { m.Options.Queue = "a b" }, wantErr: ErrInvalidOption},
		{name: "bad callback", given: func(m *Message) { m.Options.Callback = "ftp://x" }, wantErr: ErrInvalidOption},
		{name: "bad flow control", given: func(m *Message) { m.Options.FlowControl = &FlowControl{Key: "k"} }, wantErr: ErrInvalidOption},
		{name: "bad traceparent", given: func(m *Message) { m.Options.Traceparent = "00-zz" }, wantErr: ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := valid
			tt.given(&m)
			err := m.Validate()
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// PrepareMessage fails exactly where Enqueue would, and publishes nothing
// when a message is invalid.
func TestPrepareMessageInvalid(t *testing.T) {
	t.Parallel()
	if _, err := PrepareMessage(context.Background(), nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("nil args: %v", err)
	}
	if _, err := PrepareMessage(context.Background(), testArgs{}, WithRetries(-1)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bad option: %v", err)
	}
	rec := newRecorder(t, nil)
	c := newTestClient(t, rec.srv.URL)
	_, err := c.PublishMessages(context.Background(), []Message{{Kind: "test.job", Body: "{}"}, {Kind: "test.job", Body: "nope"}})
	if !errors.Is(err, ErrInvalidOption) {
		t.Errorf("PublishMessages with an invalid message: %v", err)
	}
	if _, err := c.PublishMessage(context.Background(), Message{Kind: "x", Body: "[]", Options: MessageOptions{Timeout: -1}}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("PublishMessage with an invalid message: %v", err)
	}
	rec.none(t)
}
