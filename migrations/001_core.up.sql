-- Core directory and mail store: domains, users, aliases, mailboxes, messages, expunge log.

CREATE TABLE domains (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE CHECK (name = lower(name) AND length(name) BETWEEN 1 AND 253),
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    catch_all     TEXT,                        -- address that receives mail for unknown local parts
    max_users     INTEGER NOT NULL DEFAULT 0,  -- 0: unlimited
    package_id    BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    domain_id     BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    local_part    TEXT NOT NULL CHECK (local_part = lower(local_part) AND length(local_part) BETWEEN 1 AND 64),
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'owner', 'user')),
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    quota_bytes   BIGINT NOT NULL DEFAULT 0 CHECK (quota_bytes >= 0),  -- 0: unlimited
    storage_used  BIGINT NOT NULL DEFAULT 0,
    message_count BIGINT NOT NULL DEFAULT 0,
    last_login_at TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (domain_id, local_part)
);

CREATE TABLE aliases (
    id            BIGSERIAL PRIMARY KEY,
    domain_id     BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    source        TEXT NOT NULL UNIQUE,        -- full address, lower case
    destinations  TEXT[] NOT NULL CHECK (cardinality(destinations) > 0),
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE mailboxes (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,              -- IMAP name, '/' separated, UTF-8
    special_use    TEXT,                       -- \Sent, \Drafts, \Archive, \Trash, \Junk
    subscribed     BOOLEAN NOT NULL DEFAULT TRUE,
    uidvalidity    BIGINT NOT NULL,
    uidnext        BIGINT NOT NULL DEFAULT 1,
    highestmodseq  BIGINT NOT NULL DEFAULT 1,
    message_count  BIGINT NOT NULL DEFAULT 0,
    unseen_count   BIGINT NOT NULL DEFAULT 0,
    total_size     BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE INDEX mailboxes_uidvalidity ON mailboxes (uidvalidity);

CREATE TABLE messages (
    id             BIGSERIAL PRIMARY KEY,
    mailbox_id     BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    user_id        BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    uid            BIGINT NOT NULL,
    modseq         BIGINT NOT NULL,
    delivery_id    UUID NOT NULL,              -- idempotency key of the delivery that stored it
    maildir_path   TEXT NOT NULL,              -- relative to storage.maildir_root
    size           BIGINT NOT NULL,
    flags          TEXT[] NOT NULL DEFAULT '{}',
    internal_date  TIMESTAMPTZ NOT NULL DEFAULT now(),
    message_id     TEXT,
    subject        TEXT NOT NULL DEFAULT '',
    from_addr      TEXT NOT NULL DEFAULT '',
    to_addrs       TEXT NOT NULL DEFAULT '',
    cc_addrs       TEXT NOT NULL DEFAULT '',
    envelope_from  TEXT NOT NULL DEFAULT '',
    sent_date      TIMESTAMPTZ,
    in_reply_to    TEXT,
    references_hdr TEXT,
    thread_id      TEXT,
    has_attachments BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (mailbox_id, uid)
);
CREATE UNIQUE INDEX messages_delivery_once ON messages (mailbox_id, delivery_id);
CREATE INDEX messages_mailbox_modseq ON messages (mailbox_id, modseq);
CREATE INDEX messages_user ON messages (user_id);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE INDEX messages_thread ON messages (thread_id);

-- RFC 7162: expunged UIDs are remembered with the modseq of the expunge (QRESYNC VANISHED).
CREATE TABLE expunged (
    mailbox_id     BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid            BIGINT NOT NULL,
    modseq         BIGINT NOT NULL,
    expunged_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_mailbox_modseq ON expunged (mailbox_id, modseq);

-- Directory changes are announced so every running process can drop its cache (LISTEN whymail_directory).
CREATE FUNCTION whymail_directory_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('whymail_directory', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER domains_changed AFTER INSERT OR UPDATE OR DELETE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION whymail_directory_changed();
CREATE TRIGGER users_changed AFTER INSERT OR DELETE OR UPDATE OF email, password_hash, is_active, quota_bytes, role
    ON users FOR EACH STATEMENT EXECUTE FUNCTION whymail_directory_changed();
CREATE TRIGGER aliases_changed AFTER INSERT OR UPDATE OR DELETE ON aliases
    FOR EACH STATEMENT EXECUTE FUNCTION whymail_directory_changed();
