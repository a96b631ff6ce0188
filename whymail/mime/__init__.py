"""MIME handling: message summaries for indexing (`summary`)."""

from whymail.mime.summary import MessageSummary, summarize, thread_id

__all__ = ["MessageSummary", "summarize", "thread_id"]
