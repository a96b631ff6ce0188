-- The virtual Starred mailbox (special-use \Flagged, RFC 6154): every \Flagged message of a user under
-- its own UIDs and MODSEQs. A trigger on messages keeps it in step with every write, whatever the path.
--
-- starred_state: per user, the next virtual UID and the view's HIGHESTMODSEQ (UIDVALIDITY is fixed:
-- virtual UIDs are never reused). starred: one row per time a message entered the view; `gone` once it
-- left it (unflagged, expunged, moved), kept so changes_since can report the UID as expunged.

CREATE TABLE starred_state (
    user_id        BIGINT PRIMARY KEY,
    uidnext        BIGINT NOT NULL DEFAULT 1,
    highestmodseq  BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE starred (
    user_id        BIGINT NOT NULL,
    vuid           BIGINT NOT NULL,
    message_id     BIGINT NOT NULL,            -- messages.id
    modseq         BIGINT NOT NULL,            -- view MODSEQ of the last change
    created_modseq BIGINT NOT NULL,            -- view MODSEQ at which it entered the view
    gone           BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, vuid)
);
CREATE UNIQUE INDEX starred_present ON starred (message_id) WHERE NOT gone;
CREATE INDEX starred_user_modseq ON starred (user_id, modseq);

CREATE FUNCTION whymail_starred_sync() RETURNS trigger AS $$
DECLARE
    was_flagged BOOLEAN := TG_OP <> 'INSERT' AND '\Flagged' = ANY(OLD.flags);
    is_flagged  BOOLEAN := TG_OP <> 'DELETE' AND '\Flagged' = ANY(NEW.flags);
    owner       BIGINT;
    mid         BIGINT;
    next_modseq BIGINT;
    next_uid    BIGINT;
BEGIN
    IF NOT was_flagged AND NOT is_flagged THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        owner := OLD.user_id; mid := OLD.id;
    ELSE
        owner := NEW.user_id; mid := NEW.id;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = owner) THEN
        DELETE FROM starred WHERE user_id = owner;  -- the user is being deleted
        DELETE FROM starred_state WHERE user_id = owner;
        RETURN NULL;
    END IF;
    INSERT INTO starred_state AS s (user_id, uidnext, highestmodseq) VALUES (owner, 1, 2)
        ON CONFLICT (user_id) DO UPDATE SET highestmodseq = s.highestmodseq + 1
        RETURNING highestmodseq INTO next_modseq;
    IF is_flagged AND was_flagged THEN
        UPDATE starred SET modseq = next_modseq WHERE message_id = mid AND NOT gone;
        IF FOUND THEN
            RETURN NULL;
        END IF;
    ELSIF was_flagged THEN
        UPDATE starred SET modseq = next_modseq, gone = TRUE WHERE message_id = mid AND NOT gone;
        RETURN NULL;
    END IF;
    UPDATE starred_state SET uidnext = uidnext + 1 WHERE user_id = owner RETURNING uidnext - 1 INTO next_uid;
    INSERT INTO starred (user_id, vuid, message_id, modseq, created_modseq)
        VALUES (owner, next_uid, mid, next_modseq, next_modseq);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER messages_starred AFTER INSERT OR DELETE OR UPDATE OF flags ON messages
    FOR EACH ROW EXECUTE FUNCTION whymail_starred_sync();

-- Messages already \Flagged enter the view now.
INSERT INTO starred_state (user_id, uidnext, highestmodseq)
    SELECT user_id, count(*) + 1, 1 FROM messages WHERE '\Flagged' = ANY(flags) GROUP BY user_id;
INSERT INTO starred (user_id, vuid, message_id, modseq, created_modseq)
    SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY id), id, 1, 1
      FROM messages WHERE '\Flagged' = ANY(flags);
