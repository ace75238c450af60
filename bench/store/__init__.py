"""The result store: the record schema, the append-only store, submissions."""
