package store

// SetBeforeCommit installs a hook Postgres calls at the end of each money
// transaction and each Stripe event receipt (op "credit", "refund", "tip" or
// "stripe-event"), after its follow-ups: its locks are held and nothing is
// committed yet. Tests use it to hold a transaction open at the worst moment.
func SetBeforeCommit(p *Postgres, f func(op string)) { p.hook = f }
