// Package control inspects and steers jobs on QStash through its REST API:
// the messages QStash holds, its event log, the dead-letter queue, queues
// and schedules, and the periodic jobs declared in code (jobs.Periodic),
// which it syncs to QStash schedules. qstash-go v1.0.0 lacks DLQ retry,
// schedule ids and contexts, so every call here is a plain HTTP request
// bound to the caller's context.
//
//	c, err := control.New(control.Config{Token: token, WorkerPublicURL: workerURL})
//
//	// A job by the id Enqueue returned: still pending? cancel it.
//	m, err := c.Message(ctx, res.MessageID)        // errors.Is(err, control.ErrNotFound) once done
//	err = c.CancelMessage(ctx, res.MessageID)
//
//	// What happened to it, newest first, page by page.
//	page, err := c.Events(ctx, control.EventFilter{MessageIDs: []string{id}}, control.Page{})
//	next, err := c.Events(ctx, filter, control.Page{Cursor: page.Cursor}) // until Cursor == ""
//
//	// The dead letters of one job, typed: job name, args, last answer, attempts.
//	dl, err := c.DLQ(ctx, control.DLQFilter{Job: "tips.notify-creator"}, control.Page{})
//	e, err := c.DLQEntry(ctx, dl.Entries[0].DLQID)
//	args, err := control.ArgsOf[NotifyCreator](e.Message)
//	ids, err := c.RetryDLQ(ctx, e.DLQID)                       // new message ids
//	n, err := c.DeleteDLQWhere(ctx, control.DLQFilter{ResponseStatus: 489})
//
//	// Queues and schedules.
//	err = c.PauseQueue(ctx, "payouts")
//	err = c.PauseSchedule(ctx, id)
//
// Periodic jobs are declared next to their handlers and synced as a release
// step (cmd/worker -sync-schedules):
//
//	_ = jobs.Register(reg, refreshCounts)
//	_ = reg.AddPeriodic(jobs.Periodic{Cron: "*/5 * * * *", Args: RefreshCounts{}})
//	plan, err := c.PlanSchedules(ctx, reg.Periodic()) // a dry run: create/update/delete/keep
//	plan, err = c.SyncSchedules(ctx, reg.Periodic())  // apply it
//
// A declaration's schedule id is Config.App + "." + its name, so syncing
// twice changes nothing and a changed cron, args or option replaces the
// schedule in place (a paused one stays paused). A sync deletes the
// schedules it made that are no longer declared, recognised by all of: the
// id prefix, the MarkerHeader it forwards, and a destination under
// WorkerPublicURL's job routes. Any other schedule of the account is left
// alone; an undeclared schedule squatting on a declared id stops the plan
// with ErrInvalidArgument instead of being taken over.
//
// Errors: ErrInvalidArgument before anything is sent; otherwise an
// *APIError (errors.Is ErrAPI, and ErrNotFound on a 404) carrying QStash's
// status and text, or the transport error (context.Canceled,
// context.DeadlineExceeded) when no answer came. The token is never part of
// an error. See docs/qstash-protocol.md §7, §12, §13 and §15 for the calls.
package control
