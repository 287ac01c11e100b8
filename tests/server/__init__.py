"""Tests that start the real server in-process (or its CLI) on a loopback port and talk gRPC to it, on SQLite and PostgreSQL."""
