-- Reverts 002_mail_features, dependents first.

DROP INDEX IF EXISTS messages_search;
ALTER TABLE messages DROP COLUMN IF EXISTS search_vector;
ALTER TABLE messages DROP COLUMN IF EXISTS body_text;

DROP TABLE IF EXISTS dkim_keys;
DROP TABLE IF EXISTS login_failures;
DROP TABLE IF EXISTS refresh_tokens;
DROP TABLE IF EXISTS api_tokens;
DROP TABLE IF EXISTS audit_logs;
DROP TABLE IF EXISTS system_config;
DROP TABLE IF EXISTS saved_searches;
DROP TABLE IF EXISTS read_receipts;
DROP TABLE IF EXISTS signatures;
DROP TABLE IF EXISTS email_rules;
DROP TABLE IF EXISTS attachments;
DROP TABLE IF EXISTS drafts;
DROP TABLE IF EXISTS notification_preferences;
DROP TABLE IF EXISTS notifications;
DROP TABLE IF EXISTS outbound_queue;

DROP INDEX IF EXISTS domains_package;
ALTER TABLE domains DROP CONSTRAINT IF EXISTS domains_package_id_fkey;
DROP TABLE IF EXISTS packages;
DROP TABLE IF EXISTS package_templates;
