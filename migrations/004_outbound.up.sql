-- Outbound queue helpers: the per-user daily send count and cleanup by age.
CREATE INDEX outbound_queue_user_created ON outbound_queue (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX outbound_queue_finished ON outbound_queue (updated_at) WHERE status IN ('sent', 'failed', 'dead');
CREATE INDEX outbound_queue_message_path ON outbound_queue (message_path);
