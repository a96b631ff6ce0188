DROP INDEX IF EXISTS outbound_queue_message_path;
DROP INDEX IF EXISTS outbound_queue_finished;
DROP INDEX IF EXISTS outbound_queue_user_created;
