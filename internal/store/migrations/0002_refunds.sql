-- 0002: refunds in any order, partial refunds, and what an operator reads.
--
-- Stripe does not order its events: a refund may be handled before the
-- payment it refunds is credited. A refund is therefore recorded first
-- (stripe_refunds, one row per PaymentIntent, merged from every event) and
-- the ledger follows it: the reversal is posted when both the refund and the
-- deposit are known, in the transaction of whichever arrives last. Partial
-- refunds reverse a deposit in steps; the database refuses steps that would
-- reverse more than the deposit or post the same step twice.

-- A deposit may now have several reversals. Each one carries the deposit's
-- cumulative reversed total after it, so a step is identified by
-- (deposit, total): a replayed step cannot post twice.
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_reverses_id_key;
ALTER TABLE ledger_transactions ADD COLUMN reversed_total bigint;
-- 0001 reversed whole deposits only: their total is the deposit.
UPDATE ledger_transactions r SET reversed_total = (
    SELECT e.amount FROM ledger_entries e
    JOIN accounts a ON a.id = e.account_id AND a.user_id IS NOT NULL
    WHERE e.transaction_id = r.reverses_id)
WHERE r.kind = 'reversal';
ALTER TABLE ledger_transactions
    ADD CONSTRAINT ledger_transactions_reversal_total
        CHECK ((kind = 'reversal') = (reversed_total IS NOT NULL) AND reversed_total > 0),
    ADD CONSTRAINT ledger_transactions_reversal_step UNIQUE (reverses_id, reversed_total);

-- Checked at commit, after the entries exist: a reversal points at a
-- deposit, takes from the deposit's wallet only, and its reversed_total is
-- the sum of all the deposit's reversals, which never exceeds the deposit.
-- The row lock on the deposit makes concurrent reversals of one deposit
-- check one after the other (each statement of a READ COMMITTED function
-- sees what committed before it), so two racing steps cannot both pass.
-- NO KEY UPDATE, not UPDATE: it must not conflict with the key-share lock
-- that inserting a row referencing the deposit takes.
CREATE FUNCTION ledger_reversal_within_deposit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deposit_account bigint;
    deposited       bigint;
    reversed        bigint;
BEGIN
    PERFORM 1 FROM ledger_transactions WHERE id = NEW.reverses_id AND kind = 'deposit' FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reversal % does not point at a deposit', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_reversal_within_deposit';
    END IF;
    SELECT e.account_id, e.amount INTO deposit_account, deposited
      FROM ledger_entries e JOIN accounts a ON a.id = e.account_id AND a.user_id IS NOT NULL
     WHERE e.transaction_id = NEW.reverses_id;
    IF EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id AND a.user_id IS NOT NULL
                WHERE e.transaction_id = NEW.id AND e.account_id <> deposit_account) THEN
        RAISE EXCEPTION 'reversal % takes from another wallet than its deposit''s', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_reversal_within_deposit';
    END IF;
    SELECT coalesce(-sum(e.amount), 0) INTO reversed
      FROM ledger_transactions r JOIN ledger_entries e ON e.transaction_id = r.id AND e.account_id = deposit_account
     WHERE r.reverses_id = NEW.reverses_id;
    IF reversed <> NEW.reversed_total OR reversed > deposited THEN
        RAISE EXCEPTION 'reversals of deposit % total % (step says %), deposit is %', NEW.reverses_id, reversed, NEW.reversed_total, deposited
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_reversal_within_deposit';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER ledger_reversal_within_deposit AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.kind = 'reversal') EXECUTE FUNCTION ledger_reversal_within_deposit();

-- What Stripe has said about the refunds of one PaymentIntent's charge,
-- merged from every charge.refunded event in whatever order they came:
-- amount_refunded is cumulative, so the largest seen is the latest; the
-- "refunded" flag only ever turns on. Amounts are the charge's currency in
-- minor units, not tokens. A row without a deposit is a refund waiting for
-- its payment (or for a payment that was never a token purchase): it is kept
-- until an operator deletes it.
--
-- shortfall is the tokens the refunds took back that the user had already
-- spent (tipped away): recorded instead of reversed, for an operator.
CREATE TABLE stripe_refunds (
    payment_ref     text PRIMARY KEY CHECK (length(payment_ref) BETWEEN 1 AND 255),
    charge_ref      text CHECK (length(charge_ref) BETWEEN 1 AND 255),
    charge_amount   bigint      NOT NULL DEFAULT 0 CHECK (charge_amount >= 0),
    amount_refunded bigint      NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    fully_refunded  boolean     NOT NULL DEFAULT false,
    shortfall       bigint      NOT NULL DEFAULT 0 CHECK (shortfall >= 0),
    shortfall_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stripe_refunds_within_charge CHECK (amount_refunded <= charge_amount),
    -- Without the charge's amount only a full refund has a known share.
    CONSTRAINT stripe_refunds_share_known CHECK (charge_amount > 0 OR fully_refunded),
    CONSTRAINT stripe_refunds_shortfall_dated CHECK ((shortfall > 0) = (shortfall_at IS NOT NULL))
);

-- 0001's reversals were whole refunds: record them as such, so a repeat of
-- their refund event finds nothing left to do.
INSERT INTO stripe_refunds (payment_ref, fully_refunded)
SELECT d.external_ref, true
  FROM ledger_transactions r JOIN ledger_transactions d ON d.id = r.reverses_id
 WHERE r.kind = 'reversal';

-- Refunds Stripe reports as failed or canceled, once per refund. Nothing is
-- re-credited automatically (see the store package documentation): these
-- rows are for an operator.
CREATE TABLE stripe_refund_failures (
    refund_ref  text PRIMARY KEY CHECK (length(refund_ref) BETWEEN 1 AND 255),
    payment_ref text        NOT NULL CHECK (length(payment_ref) BETWEEN 1 AND 255),
    amount      bigint      NOT NULL CHECK (amount >= 0),
    status      text        NOT NULL CHECK (status IN ('failed', 'canceled')),
    reason      text        NOT NULL DEFAULT '' CHECK (reason ~ '^[a-z_]{0,64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_refund_failures_payment_idx ON stripe_refund_failures (payment_ref);

-- The operator's one place to look: refunds still waiting for their
-- payment, tokens a refund could not take back, and failed or canceled
-- refunds, oldest first. Each lookup of a deposit goes through the unique
-- external_ref index.
CREATE FUNCTION deposit_user(ref text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT a.user_id
      FROM ledger_transactions d
      JOIN ledger_entries e ON e.transaction_id = d.id
      JOIN accounts a ON a.id = e.account_id AND a.user_id IS NOT NULL
     WHERE d.external_ref = ref AND d.kind = 'deposit'
$$;
CREATE VIEW refund_exceptions AS
SELECT 'pending'::text AS kind, r.payment_ref, NULL::text AS refund_ref, NULL::text AS user_id,
       NULL::bigint AS tokens, r.amount_refunded AS amount, r.created_at AS since
  FROM stripe_refunds r
 WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions d WHERE d.external_ref = r.payment_ref AND d.kind = 'deposit')
UNION ALL
SELECT 'shortfall', r.payment_ref, NULL, deposit_user(r.payment_ref), r.shortfall, NULL, r.shortfall_at
  FROM stripe_refunds r
 WHERE r.shortfall > 0
UNION ALL
SELECT 'refund_' || f.status, f.payment_ref, f.refund_ref, deposit_user(f.payment_ref), NULL, f.amount, f.created_at
  FROM stripe_refund_failures f;
