CREATE TABLE IF NOT EXISTS jetq_outbox (
    id          BIGSERIAL    PRIMARY KEY,          -- relay order (oldest first)
    msg_id      TEXT         NOT NULL,             -- the task id: the key, or a generated id; Nats-Msg-Id
    subject     TEXT         NOT NULL,             -- e.g. jetq.task.emails.send_welcome
    headers     JSONB        NOT NULL DEFAULT '{}'::jsonb, -- {"Header-Name": "value", ...} (string values; Nats-Msg-Id need not be in it)
    payload     BYTEA        NOT NULL,             -- the JSON args bytes exactly as published
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    attempts    INTEGER      NOT NULL DEFAULT 0,   -- relay publish attempts that failed
    last_error  TEXT                               -- why the last attempt failed (NULL if none)
);
CREATE INDEX IF NOT EXISTS jetq_outbox_created_at ON jetq_outbox (created_at);
-- Wake relays on commit (NOTIFY is delivered only when the inserting transaction commits):
CREATE OR REPLACE FUNCTION jetq_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('jetq_outbox', ''); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS jetq_outbox_notify ON jetq_outbox;
CREATE TRIGGER jetq_outbox_notify AFTER INSERT ON jetq_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION jetq_outbox_notify();
