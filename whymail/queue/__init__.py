"""The outbound queue: spool files, `outbound_queue` rows, retry policy and the delivery engine."""
