// Package qstashdev is an in-memory, QStash-compatible server for local
// development and tests: publish, enqueue and batch messages, signed
// deliveries with retries, backoff, 489 handling, Retry-After, callbacks,
// a dead-letter queue, FIFO queues, flow control, deduplication, URL groups
// and cron schedules, as described in docs/qstash-protocol.md.
//
// By default it uses the official dev server's public token and signing
// keys (DevToken, DevCurrentSigningKey, DevNextSigningKey), so the official
// SDKs, including the JS SDK's dev mode, accept it as their dev server.
//
// Embedding it in a test:
//
//	srv, err := qstashdev.New(qstashdev.Config{TimeScale: 0.001}) // retries 1000x faster
//	if err != nil { ... }
//	ts := httptest.NewServer(srv.Handler())
//	defer ts.Close()
//	defer srv.Close()
//	client := qstash.NewClientWith(qstash.Options{Url: ts.URL, Token: qstashdev.DevToken})
//
// or, shorter, qstashdevtest.Start(t, cfg). As a process: cmd/qstash-dev.
//
// Everything lives in memory and is bounded (see the Max* fields of
// Config); Config.DataDir keeps it in a journal across restarts. Deliveries
// are real HTTP requests; a single timer-driven scheduler (a min-heap of
// due times) starts them, so delayed messages go out within about a
// millisecond of their due time. Config.TimeScale shrinks the waits
// between retries for tests, Config.DelayScale the delays. Upstash
// Workflow runs (the official @upstash/workflow SDK's serve()) work
// against it. Server.Stats and Server.WaitIdle (and the development-only
// GET /qstashdev/stats?waitIdle=) tell a test when everything published
// has been delivered.
//
// Its token is public and it fetches any URL, so a web page in the
// developer's browser must not reach it: Handler refuses cross-site requests
// (Origin, Sec-Fetch-Site) and Host names other than localhost, IP
// addresses and Config.AllowedHosts, and reads ?qstash_token= only with
// Config.AllowQueryToken.
//
// What differs from the real service is listed in docs/qstash-dev.md.
package qstashdev
