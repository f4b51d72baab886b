-- 0001: streams, wallets with a double-entry ledger, and tips.
--
-- Money is integer minor units (tokens) in bigint; there are no floats
-- anywhere. The database is the last guard: even if every check in the
-- application were skipped, a user balance cannot go negative, a ledger
-- transaction cannot be unbalanced, a Stripe payment is credited once and a
-- (tipper, idempotency key) pair pays once.

CREATE TABLE streams (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    creator_id  text        NOT NULL CHECK (length(creator_id) BETWEEN 1 AND 255),
    -- Lower-case, so the status route and cache keys see one spelling.
    username    text        NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9_]{3,30}$'),
    title       text        NOT NULL DEFAULT '' CHECK (length(title) <= 200),
    live        boolean     NOT NULL DEFAULT false,
    viewers     integer     NOT NULL DEFAULT 0 CHECK (viewers >= 0),
    started_at  timestamptz,
    ended_at    timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT streams_live_has_start CHECK (NOT live OR started_at IS NOT NULL)
);
CREATE INDEX streams_creator_idx ON streams (creator_id);

-- accounts holds user wallets (user_id set) and system accounts
-- (system_name set). Only user wallets must stay >= 0: the system account
-- 'stripe/deposits' is the other side of every Stripe credit, so its balance
-- is minus the money users hold from Stripe, and that is meant to be negative.
CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     text UNIQUE CHECK (length(user_id) BETWEEN 1 AND 255),
    system_name text UNIQUE,
    balance     bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_one_owner CHECK ((user_id IS NULL) <> (system_name IS NULL)),
    CONSTRAINT accounts_balance_nonnegative CHECK (user_id IS NULL OR balance >= 0)
);
INSERT INTO accounts (system_name) VALUES ('stripe/deposits');

-- One row per money movement. external_ref is the Stripe PaymentIntent id
-- of a deposit: unique, so a payment is credited once however often the
-- event arrives. A reversal points at the deposit it undoes, once.
CREATE TABLE ledger_transactions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('deposit', 'tip', 'reversal')),
    external_ref text UNIQUE CHECK (length(external_ref) BETWEEN 1 AND 255),
    reverses_id  bigint UNIQUE REFERENCES ledger_transactions (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transactions_deposit_ref CHECK ((kind = 'deposit') = (external_ref IS NOT NULL)),
    CONSTRAINT ledger_transactions_reversal_ref CHECK ((kind = 'reversal') = (reverses_id IS NOT NULL))
);

-- Append-only entries: a positive amount credits the account, a negative
-- one debits it. Every transaction's entries sum to zero (checked at commit).
CREATE TABLE ledger_entries (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id bigint      NOT NULL REFERENCES ledger_transactions (id),
    account_id     bigint      NOT NULL REFERENCES accounts (id),
    amount         bigint      NOT NULL CHECK (amount <> 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_transaction_idx ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id);

-- The balance is maintained from the entries, so balance = sum(entries) by
-- construction; the accounts CHECK then refuses any entry that would take a
-- user below zero (SQLSTATE 23514).
CREATE FUNCTION ledger_entries_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER ledger_entries_apply AFTER INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_apply();

CREATE FUNCTION ledger_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries are append-only; post a reversal instead'
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable();

-- Deferred to commit, so a transaction may insert its legs one by one.
CREATE FUNCTION ledger_transactions_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tx    bigint;
    total bigint;
    legs  integer;
BEGIN
    IF TG_TABLE_NAME = 'ledger_transactions' THEN
        tx := NEW.id;
    ELSE
        tx := NEW.transaction_id;
    END IF;
    SELECT coalesce(sum(amount), 0), count(*) INTO total, legs
      FROM ledger_entries WHERE transaction_id = tx;
    IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced (sum %, % entries)', tx, total, legs
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transactions_balanced';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_transactions_balanced();
-- And a transaction without entries (at least two) is refused too.
CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_transactions_balanced();

-- A tip is a 'tip' ledger transaction plus this row. The unique
-- (tipper_id, idempotency_key) is the last guard behind the Redis
-- idempotency layer: a lost Redis record cannot make a second tip.
CREATE TABLE tips (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       bigint      NOT NULL REFERENCES streams (id),
    tipper_id       text        NOT NULL CHECK (length(tipper_id) BETWEEN 1 AND 255),
    creator_id      text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    idempotency_key text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    transaction_id  bigint      NOT NULL UNIQUE REFERENCES ledger_transactions (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tips_tipper_key_unique UNIQUE (tipper_id, idempotency_key),
    CONSTRAINT tips_not_self CHECK (tipper_id <> creator_id)
);
CREATE INDEX tips_creator_created_idx ON tips (creator_id, created_at);
