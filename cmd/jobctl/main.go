// Command jobctl is the operator's tool for a jobworker deployment. It reads
// the same environment as the binaries (REDIS_URL, REDIS_KEY_PREFIX,
// QSTASH_URL, QSTASH_TOKEN, WORKER_PUBLIC_URL, SCHEDULES_APP, DATABASE_URL,
// RATE_LIMIT_*), each command only what it needs:
//
//	jobctl [-json] keys [-count N] [-max N] [-values [-reveal]] [-progress] PATTERN
//	jobctl [-json] limits show|reset BUCKET IDENTITY
//	jobctl [-json] idem show|forget KEY
//	jobctl [-json] dlq list [-job NAME] [-status CODE] [-limit N]
//	jobctl [-json] dlq show DLQ_ID
//	jobctl [-json] dlq retry|delete (DLQ_ID... | -job NAME | -status CODE | -all)
//	jobctl [-json] jobs show|cancel MESSAGE_ID
//	jobctl [-json] jobs events [-job NAME] [-id MESSAGE_ID] [-state STATE] [-limit N]
//	jobctl [-json] schedules list|diff|sync
//	jobctl [-json] outbox status
//
// Tables go to stdout for people, -json prints JSON for scripts, progress
// and errors go to stderr. Exit codes: 0 done; 1 a call failed (Redis,
// QStash, the database); 2 bad usage; 3 not found; 4 bad or missing
// configuration (the line names the variable); 5 schedules diff found
// changes to make.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/jobs/control"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitNotFound = 3
	exitConfig   = 4
	exitPending  = 5
)

const usage = `usage: jobctl [-json] COMMAND ...

  keys [-count N] [-max N] [-values [-reveal]] [-progress] PATTERN
                            counts, TTLs and sizes per prefix (SCAN, never KEYS);
                            PATTERN is matched after REDIS_KEY_PREFIX
  limits show BUCKET IDENTITY
  limits reset BUCKET IDENTITY
                            IDENTITY as the API builds it: user:<id> or ip:<address>
  idem show KEY             an idempotency record (KEY as keys lists it)
  idem forget KEY
  dlq list [-job NAME] [-status CODE] [-limit N]
  dlq show DLQ_ID
  dlq retry  DLQ_ID... | -job NAME | -status CODE | -all
  dlq delete DLQ_ID... | -job NAME | -status CODE | -all
  jobs show MESSAGE_ID      a pending message
  jobs cancel MESSAGE_ID
  jobs events [-job NAME] [-id MESSAGE_ID] [-state STATE] [-limit N]
  schedules list            every schedule of the account, ours marked
  schedules diff            what a sync would change (exit 5 when something)
  schedules sync            make QStash's schedules match the periodic jobs
  outbox status             pending, sent and failed rows of the outbox

exit codes: 0 done, 1 failed, 2 usage, 3 not found, 4 configuration, 5 changes pending
`

// app is one invocation: its output streams, environment and options.
type app struct {
	stdout, stderr io.Writer
	getenv         env.Getenv
	json           bool
	// isTerminal reports whether stderr is a terminal (progress bars).
	isTerminal bool
}

// usageError is bad usage: exit 2 with the usage text.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// notFound is a lookup that found nothing: exit 3.
type notFound struct{ what string }

func (e *notFound) Error() string { return e.what + " not found" }

// pending is schedules diff with changes: exit 5, not an error message.
var errPending = errors.New("changes pending")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fi, _ := os.Stderr.Stat()
	a := &app{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		isTerminal: fi != nil && fi.Mode()&os.ModeCharDevice != 0}
	os.Exit(a.run(ctx, os.Args[1:]))
}

// run executes one command line and returns the exit code.
func (a *app) run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("jobctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&a.json, "json", false, "print JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprint(a.stderr, usage)
		return exitUsage
	}
	err := a.dispatch(ctx, fs.Arg(0), fs.Args()[1:])
	return a.exit(err)
}

func (a *app) exit(err error) int {
	var ue *usageError
	var nf *notFound
	var ee *env.Error
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errPending):
		return exitPending
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "jobctl: %s\n\n%s", ue.msg, usage)
		return exitUsage
	case errors.As(err, &nf), errors.Is(err, control.ErrNotFound):
		fmt.Fprintln(a.stderr, "jobctl:", err)
		return exitNotFound
	case errors.As(err, &ee):
		fmt.Fprintln(a.stderr, "jobctl:", err)
		return exitConfig
	case errors.Is(err, control.ErrInvalidArgument):
		fmt.Fprintln(a.stderr, "jobctl:", err)
		return exitUsage
	default:
		fmt.Fprintln(a.stderr, "jobctl:", err)
		return exitFailed
	}
}

func (a *app) dispatch(ctx context.Context, cmd string, args []string) error {
	sub := func() (string, []string, error) {
		if len(args) == 0 {
			return "", nil, usagef("%s needs a subcommand", cmd)
		}
		return args[0], args[1:], nil
	}
	switch cmd {
	case "keys":
		return a.keys(ctx, args)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(a.stdout, usage)
		return nil
	}
	s, rest, err := sub()
	if err != nil {
		return err
	}
	switch cmd + " " + s {
	case "limits show", "limits reset":
		return a.limits(ctx, s, rest)
	case "idem show", "idem forget":
		return a.idem(ctx, s, rest)
	case "dlq list":
		return a.dlqList(ctx, rest)
	case "dlq show":
		return a.dlqShow(ctx, rest)
	case "dlq retry", "dlq delete":
		return a.dlqAct(ctx, s, rest)
	case "jobs show", "jobs cancel":
		return a.jobs(ctx, s, rest)
	case "jobs events":
		return a.events(ctx, rest)
	case "schedules list":
		return a.schedulesList(ctx, rest)
	case "schedules diff", "schedules sync":
		return a.schedulesSync(ctx, s == "diff", rest)
	case "outbox status":
		return a.outboxStatus(ctx, rest)
	}
	return usagef("unknown command %q", cmd+" "+s)
}

// flags parses a subcommand's flags; positional arguments follow them.
func flags(name string, args []string, def func(fs *flag.FlagSet)) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if def != nil {
		def(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, usagef("%s: %v", name, err)
	}
	return fs, nil
}
