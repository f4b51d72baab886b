package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/worker"
)

// Welcome is a job: a payload type with a stable name.
type Welcome struct {
	User string `json:"user"`
}

func (Welcome) Kind() string { return "users.welcome" }

// A worker on plain net/http. Everything between the two rules is all the
// wiring an app needs; the rest stands in for QStash, Redis and the API.
func Example() {
	qstash, rdb, stop := localServices()
	defer stop()
	mux := http.NewServeMux()
	public := httptest.NewServer(mux) // the worker's public URL
	defer public.Close()
	ran := make(chan string, 1)

	// ----
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{})
	if err != nil {
		panic(err)
	}
	err = jobs.Register(reg, func(ctx context.Context, j *jobs.Job[Welcome]) error {
		ran <- "welcome, " + j.Args.User
		return nil
	})
	if err != nil {
		panic(err)
	}
	w, err := worker.New(worker.Config{
		Registry: reg, Redis: rdb, PublicURL: public.URL,
		CurrentSigningKey: qstashdev.DevCurrentSigningKey,
		NextSigningKey:    qstashdev.DevNextSigningKey,
	})
	if err != nil {
		panic(err)
	}
	mux.Handle("/jobs/", w)
	// ----

	enqueue(qstash, public.URL, Welcome{User: "ada"})
	fmt.Println(wait(ran))
	// Output: welcome, ada
}

// The same worker in an Echo app: Mount adds the routes.
func ExampleHandler_Mount() {
	qstash, rdb, stop := localServices()
	defer stop()
	e := echo.New()
	public := httptest.NewServer(e)
	defer public.Close()
	ran := make(chan string, 1)

	// ----
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{})
	if err != nil {
		panic(err)
	}
	err = jobs.Register(reg, func(ctx context.Context, j *jobs.Job[Welcome]) error {
		ran <- "welcome, " + j.Args.User
		return nil
	})
	if err != nil {
		panic(err)
	}
	w, err := worker.New(worker.Config{
		Registry: reg, Redis: rdb, PublicURL: public.URL,
		CurrentSigningKey: qstashdev.DevCurrentSigningKey,
		NextSigningKey:    qstashdev.DevNextSigningKey,
	})
	if err != nil {
		panic(err)
	}
	w.Mount(e)
	// ----

	enqueue(qstash, public.URL, Welcome{User: "grace"})
	fmt.Println(wait(ran))
	// Output: welcome, grace
}

// localServices starts an in-process QStash (qstashdev) and Redis
// (miniredis) for the examples.
func localServices() (qstashURL string, rdb *redis.Client, stop func()) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	qs, err := qstashdev.New(qstashdev.Config{})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(qs.Handler())
	rdb = redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	return srv.URL, rdb, func() {
		_ = rdb.Close()
		_ = qs.Close()
		srv.Close()
		mr.Close()
	}
}

// wait returns what the job reported, or says it never ran.
func wait(ran <-chan string) string {
	select {
	case s := <-ran:
		return s
	case <-time.After(30 * time.Second):
		return "the job did not run"
	}
}

func enqueue(qstashURL, workerURL string, args jobs.Args) {
	client, err := jobs.NewClient(jobs.ClientConfig{QStashURL: qstashURL, Token: qstashdev.DevToken, WorkerPublicURL: workerURL})
	if err != nil {
		panic(err)
	}
	if _, err := client.Enqueue(context.Background(), args); err != nil {
		panic(err)
	}
}
