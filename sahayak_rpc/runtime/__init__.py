"""The long-lived parts of the server: clock, background threads, caches."""
