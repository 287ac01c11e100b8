"""Whole-system tests: server processes killed and restarted (crash harness), fuzzing, faults, replicas, soak."""
