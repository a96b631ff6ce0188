DROP INDEX IF EXISTS messages_mailbox_date;
