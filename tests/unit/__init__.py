"""Fast tests of the pure domain: no server, no network (a SQLite file at most); `pytest tests/unit` runs in under a minute."""
