-- The API's message list pages a mailbox by (internal_date, id) in either direction: an index in that
-- order reads one page instead of sorting the whole mailbox.
CREATE INDEX messages_mailbox_date ON messages (mailbox_id, internal_date, id);
