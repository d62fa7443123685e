"""The pure core: the record, statuses, errors, seeded hashing, quota arithmetic, licences, URL and
query rules. No apache_beam, no options, no I/O (see ARCHITECTURE.md)."""
