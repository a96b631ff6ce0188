-- Mail features around the core store: outbound queue, notifications, drafts and attachments, rules,
-- signatures, read receipts, saved searches, packages, system config, audit log, tokens, login
-- lockouts, DKIM keys, and full-text search on messages.

-- Packages: limits a domain is sold/assigned with. Templates are presets an admin copies from.
CREATE TABLE package_templates (
    id                BIGSERIAL PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    description       TEXT NOT NULL DEFAULT '',
    max_users         INTEGER NOT NULL DEFAULT 0 CHECK (max_users >= 0),          -- 0: unlimited
    max_storage_bytes BIGINT NOT NULL DEFAULT 0 CHECK (max_storage_bytes >= 0),   -- 0: unlimited
    max_send_per_day  INTEGER NOT NULL DEFAULT 0 CHECK (max_send_per_day >= 0),   -- 0: unlimited
    features          JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(features) = 'object'),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE packages (
    id                BIGSERIAL PRIMARY KEY,
    template_id       BIGINT REFERENCES package_templates(id) ON DELETE SET NULL,
    name              TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    description       TEXT NOT NULL DEFAULT '',
    max_users         INTEGER NOT NULL DEFAULT 0 CHECK (max_users >= 0),          -- 0: unlimited
    max_storage_bytes BIGINT NOT NULL DEFAULT 0 CHECK (max_storage_bytes >= 0),   -- 0: unlimited
    max_send_per_day  INTEGER NOT NULL DEFAULT 0 CHECK (max_send_per_day >= 0),   -- 0: unlimited
    features          JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(features) = 'object'),
    is_active         BOOLEAN NOT NULL DEFAULT TRUE,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX packages_template ON packages (template_id);

-- domains.package_id exists since 001; deleting a package leaves its domains without one.
ALTER TABLE domains
    ADD CONSTRAINT domains_package_id_fkey FOREIGN KEY (package_id) REFERENCES packages(id) ON DELETE SET NULL;
CREATE INDEX domains_package ON domains (package_id);

-- Outbound queue: one row per (message, recipient domain), so one SMTP transaction per row.
-- Claimed with SELECT ... FOR UPDATE SKIP LOCKED by any DeliveryQueue actor.
CREATE TABLE outbound_queue (
    id                BIGSERIAL PRIMARY KEY,
    delivery_id       UUID NOT NULL,             -- idempotency key of the submission (shared by its rows)
    user_id           BIGINT REFERENCES users(id) ON DELETE SET NULL,  -- NULL: bounces, forwards, system mail
    sender            TEXT NOT NULL,             -- envelope MAIL FROM; '' for the null reverse-path (DSNs)
    recipient_domain  TEXT NOT NULL CHECK (recipient_domain = lower(recipient_domain) AND length(recipient_domain) BETWEEN 1 AND 253),
    recipients        TEXT[] NOT NULL CHECK (cardinality(recipients) > 0),
    recipient_results JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(recipient_results) = 'object'),  -- per-recipient last reply, for the DSN
    message_path      TEXT NOT NULL,             -- raw message file, relative to the spool / maildir root
    size              BIGINT NOT NULL DEFAULT 0 CHECK (size >= 0),
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'sending', 'sent', 'deferred', 'failed', 'dead')),
    priority          SMALLINT NOT NULL DEFAULT 0,   -- higher is sent first
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL DEFAULT 20 CHECK (max_attempts > 0),
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error        TEXT,
    claimed_by        TEXT,                      -- name of the DeliveryQueue actor holding the row
    claimed_at        TIMESTAMPTZ,
    expires_at        TIMESTAMPTZ NOT NULL DEFAULT now() + interval '5 days',  -- give up and bounce after this
    delay_warned_at   TIMESTAMPTZ,               -- when the "delayed" DSN went out (sent once)
    dsn_envid         TEXT,                      -- RFC 3461 ENVID
    dsn_ret           TEXT CHECK (dsn_ret IN ('FULL', 'HDRS')),  -- RFC 3461 RET
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, recipient_domain)
);
CREATE INDEX outbound_queue_claim ON outbound_queue (status, next_attempt_at, priority)
    WHERE status IN ('pending', 'deferred');
-- Rows left in 'sending' by a dead worker are found by their claim time and released.
CREATE INDEX outbound_queue_stale_claims ON outbound_queue (claimed_at) WHERE status = 'sending';
CREATE INDEX outbound_queue_user ON outbound_queue (user_id, created_at);

CREATE TABLE notifications (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type       TEXT NOT NULL CHECK (type IN ('new_email', 'email_sent', 'email_failed', 'email_retry',
                                             'quota_warning', 'domain_added', 'user_added', 'system_alert')),
    title      TEXT NOT NULL,
    body       TEXT NOT NULL DEFAULT '',
    data       JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    is_read    BOOLEAN NOT NULL DEFAULT FALSE,
    read_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_created ON notifications (user_id, created_at DESC);
CREATE INDEX notifications_user_unread ON notifications (user_id) WHERE NOT is_read;

-- One row per (user, type); no row means the defaults below.
CREATE TABLE notification_preferences (
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type          TEXT NOT NULL CHECK (type IN ('new_email', 'email_sent', 'email_failed', 'email_retry',
                                                'quota_warning', 'domain_added', 'user_added', 'system_alert')),
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,   -- stored in notifications at all
    via_websocket BOOLEAN NOT NULL DEFAULT TRUE,
    via_email     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, type)
);

CREATE TABLE drafts (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    subject        TEXT NOT NULL DEFAULT '',
    body_text      TEXT NOT NULL DEFAULT '',
    body_html      TEXT NOT NULL DEFAULT '',
    to_addrs       TEXT[] NOT NULL DEFAULT '{}',
    cc_addrs       TEXT[] NOT NULL DEFAULT '{}',
    bcc_addrs      TEXT[] NOT NULL DEFAULT '{}',
    in_reply_to    TEXT,
    references_hdr TEXT,
    -- Display snapshot (id, filename, size) of the attachments; the files are rows of `attachments`.
    attachments    JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(attachments) = 'array'),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX drafts_user_updated ON drafts (user_id, updated_at DESC);

-- An attachment belongs to a stored message, to a draft, or to neither yet (just uploaded).
CREATE TABLE attachments (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id   BIGINT REFERENCES messages(id) ON DELETE CASCADE,
    draft_id     BIGINT REFERENCES drafts(id) ON DELETE CASCADE,
    filename     TEXT NOT NULL DEFAULT '',
    content_type TEXT NOT NULL DEFAULT 'application/octet-stream',
    size         BIGINT NOT NULL CHECK (size >= 0),
    storage_path TEXT NOT NULL,
    content_id   TEXT,                          -- for inline parts referenced as cid:
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(message_id, draft_id) <= 1)
);
CREATE INDEX attachments_user ON attachments (user_id);
CREATE INDEX attachments_message ON attachments (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX attachments_draft ON attachments (draft_id) WHERE draft_id IS NOT NULL;

CREATE TABLE email_rules (
    id               BIGSERIAL PRIMARY KEY,
    user_id          BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name             TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    priority         INTEGER NOT NULL DEFAULT 0,   -- lower runs first
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    apply_to         TEXT NOT NULL DEFAULT 'incoming' CHECK (apply_to IN ('incoming', 'outgoing', 'all')),
    match_all        BOOLEAN NOT NULL DEFAULT TRUE,  -- AND of the conditions; FALSE: OR
    stop_processing  BOOLEAN NOT NULL DEFAULT FALSE,
    conditions       JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(conditions) = 'array'),
    actions          JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(actions) = 'array'),
    execution_count  BIGINT NOT NULL DEFAULT 0 CHECK (execution_count >= 0),
    last_executed_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX email_rules_user_priority ON email_rules (user_id, priority, id);

CREATE TABLE signatures (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    body_text  TEXT NOT NULL DEFAULT '',
    body_html  TEXT NOT NULL DEFAULT '',
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);
CREATE UNIQUE INDEX signatures_one_default ON signatures (user_id) WHERE is_default;

-- RFC 8098 MDNs this server owes for received messages: at most one per message.
CREATE TABLE read_receipts (
    id           BIGSERIAL PRIMARY KEY,
    message_id   BIGINT NOT NULL UNIQUE REFERENCES messages(id) ON DELETE CASCADE,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    requested_by TEXT NOT NULL,                 -- Disposition-Notification-To address
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'ignored', 'failed')),
    sent_at      TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status <> 'sent' OR sent_at IS NOT NULL)
);
CREATE INDEX read_receipts_user_status ON read_receipts (user_id, status);

CREATE TABLE saved_searches (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    query        TEXT NOT NULL DEFAULT '',
    filters      JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(filters) = 'object'),
    usage_count  BIGINT NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    last_used_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE system_config (
    key        TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 200),
    value      JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by BIGINT REFERENCES users(id) ON DELETE SET NULL
);

-- The audit trail outlives the users it mentions: actor_user_id goes NULL, actor_email stays.
CREATE TABLE audit_logs (
    id            BIGSERIAL PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_user_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    actor_email   TEXT,
    actor_ip      INET,
    action        TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    target_type   TEXT,
    target_id     TEXT,
    details       JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object')
);
CREATE INDEX audit_logs_at ON audit_logs (at);
CREATE INDEX audit_logs_actor ON audit_logs (actor_user_id, at);
CREATE INDEX audit_logs_action ON audit_logs (action, at);
CREATE INDEX audit_logs_target ON audit_logs (target_type, target_id);

-- Tokens are stored hashed only; the plain value is shown once at creation.
CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash   TEXT NOT NULL UNIQUE,
    scopes       TEXT[] NOT NULL DEFAULT '{}',
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,                   -- NULL: never
    revoked_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE refresh_tokens (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Brute-force lockout state that survives restarts and Redis outages. `key` is what is being
-- counted (an account, an address, or both); `ip` is the last address that failed.
CREATE TABLE login_failures (
    key             TEXT PRIMARY KEY,
    ip              INET,
    count           INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    first_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_failed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_until    TIMESTAMPTZ
);
CREATE INDEX login_failures_last_failed ON login_failures (last_failed_at);

CREATE TABLE dkim_keys (
    id          BIGSERIAL PRIMARY KEY,
    domain_id   BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    selector    TEXT NOT NULL CHECK (selector ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),  -- one DNS label
    algorithm   TEXT NOT NULL DEFAULT 'rsa' CHECK (algorithm IN ('rsa', 'ed25519')),
    private_key TEXT NOT NULL,                  -- PEM
    public_key  TEXT NOT NULL,                  -- base64 value of the p= tag
    is_active   BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (domain_id, selector)
);
-- RFC 8463 dual signing: at most one active key per algorithm for a domain.
CREATE UNIQUE INDEX dkim_keys_one_active ON dkim_keys (domain_id, algorithm) WHERE is_active;

-- Full-text search. 'simple' keeps words as written (no stemming), which suits mixed-language mail
-- and addresses. Writers must cap body_text: a tsvector cannot exceed 1 MB.
ALTER TABLE messages
    ADD COLUMN body_text TEXT NOT NULL DEFAULT '',
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', coalesce(subject, '')), 'A')
        || setweight(to_tsvector('simple', coalesce(from_addr, '') || ' ' || coalesce(to_addrs, '') || ' '
                                           || coalesce(cc_addrs, '')), 'B')
        || setweight(to_tsvector('simple', body_text), 'C')
    ) STORED;
CREATE INDEX messages_search ON messages USING GIN (search_vector);
