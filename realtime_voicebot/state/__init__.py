"""The pure core: conversation state, compaction policy and procedure. No I/O here."""
