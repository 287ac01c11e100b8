"""An online backup: the database (SQLite's backup API, one consistent snapshot) and its log segments.

Safe while the server runs. The database is copied first, in one read transaction, so the copy is
the database as of one commit. Then the log segments that copy lists are copied: a segment only
grows until it is left, and every byte a committed row refers to was written before the commit
(store/segments.py), so the copy holds every byte its rows refer to. A segment that retention
deleted in between held only rows past retention; their features read as lost in the copy.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .segments import folder_for, segment_name


class BackupError(RuntimeError):
    """The backup cannot be made (no source, a destination already there, an I/O failure)."""


@dataclass(frozen=True)
class BackupResult:
    """What a backup copied: the database's path and page count, the log segments copied and their
    bytes, and how many listed segments retention deleted before they could be copied."""

    path: str
    pages: int
    segments: int
    segment_bytes: int
    segments_gone: int  # listed by the copy, deleted by retention before they could be copied


def backup(source: str | Path, destination: str | Path) -> BackupResult:
    """Copy the SQLite database ``source`` to ``destination`` (a new file), then the log segments the
    copy lists, while the server may run. Raises BackupError when there is no source, anything of the
    destination already exists, or a copy fails (what it wrote is removed)."""
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    dest_segments = folder_for(str(destination))
    for taken in (destination, Path(f"{destination}-wal"), dest_segments):
        if taken.exists():
            raise BackupError(f"{taken} already exists: a backup never overwrites")
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(destination)
            try:
                src.backup(dst)  # all pages in one step: one read transaction, one snapshot
                dst.execute("PRAGMA journal_mode=WAL")
                pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
                has_segments = dst.execute("SELECT 1 FROM sqlite_master WHERE name = 'log_segments'").fetchone()
                listed = (
                    [int(n) for (n,) in dst.execute("SELECT segment FROM log_segments ORDER BY segment")]
                    if has_segments
                    else []
                )  # (a database from before log segments has none)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        _remove(destination)
        raise BackupError(f"cannot back up {source} to {destination}: {exc}") from None
    copied = size = gone = 0
    if listed:
        src_segments = folder_for(str(source))
        try:
            dest_segments.mkdir()
            for number in listed:
                name = segment_name(number)
                try:
                    shutil.copyfile(src_segments / name, dest_segments / name)
                except FileNotFoundError:
                    gone += 1
                    continue
                copied += 1
                size += (dest_segments / name).stat().st_size
        except OSError as exc:
            _remove(destination)
            shutil.rmtree(dest_segments, ignore_errors=True)
            raise BackupError(f"cannot copy the log segments to {dest_segments}: {exc.strerror}") from None
    return BackupResult(str(destination), pages, copied, size, gone)


def _remove(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
