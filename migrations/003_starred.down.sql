-- Reverts 003_starred.

DROP TRIGGER IF EXISTS messages_starred ON messages;
DROP FUNCTION IF EXISTS whymail_starred_sync();
DROP TABLE IF EXISTS starred;
DROP TABLE IF EXISTS starred_state;
