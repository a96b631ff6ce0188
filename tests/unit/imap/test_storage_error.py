"""A refusal raised in a MailboxShard must reach the gateway intact (Ray pickles exceptions)."""

import pickle

from whymail.imap.storage import StorageError


def test_storage_error_survives_pickling_with_its_code() -> None:
    error = pickle.loads(pickle.dumps(StorageError("ALREADYEXISTS", "Mailbox already exists")))
    assert isinstance(error, StorageError)
    assert (error.code, error.text, str(error)) == ("ALREADYEXISTS", "Mailbox already exists", "Mailbox already exists")
