"""Sans-I/O IMAP4rev1 core: command parser, response encoder and session state machine."""
