"""Log segments: the prediction log's batch features, in append-only files beside the database.

A logged batch's features (store/batchcodec.py's encoding, ~57 bytes a row for
the demo schema) are most of what the prediction log writes. Inside SQLite
every byte of them is written twice (into the WAL, checksummed, then copied
into the database file by a checkpoint), which costs the log's thread about
three times the CPU of the whole rest of a batch's logging. So they go into
plain files instead, written once, and the database keeps the batch's row as
before (ids, version, count, probabilities, threshold, time) with a 24-byte
*reference* in ``columns_data`` where the features were:

    b"SSG1" | segment number (u32) | offset (u64) | length (u32) | CRC-32 (u32)   (little-endian)

Files live in ``<database>-segments/``, named ``<number>.seg`` (ten digits),
each starting with an 8-byte header. A process appends to a segment of its
own, a new one at start, and starts another past 64 MiB or once its first
record is an hour old, so retention can delete whole files soon after their
last record expires (``log_segments`` in the database keeps each segment's
newest record time).

Order and crash safety: the bytes are written to the segment before the row
that refers to them is committed, so a committed reference points at bytes
the kernel has. A process crash loses nothing the database has. Segments are
fdatasync'ed before each checkpoint (every 0.5 s), so after a power loss at
most the last moments of references can point past what reached the disk;
the CRC finds those, and a reader reports such a batch as lost
(:class:`LostPayload`) instead of reading garbage. Bytes written for a
transaction that then failed (a full database, say) are left unreferenced and
go with their segment.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

from ..errors import ResourceExhausted, ServiceError, Unavailable
from .batchcodec import BatchFormatError, decode_columns

REF_MAGIC = b"SSG1"
_REF = struct.Struct("<4sIQII")
REF_SIZE = _REF.size
HEADER = b"SAHSEG1\n"
MAX_SEGMENT_BYTES = 64 << 20
MAX_SEGMENT_SPAN_US = 3600 * 1_000_000
SUFFIX = ".seg"


def _datasync(fd: int) -> None:
    """fdatasync where the platform has it (Linux), fsync elsewhere (macOS)."""
    getattr(os, "fdatasync", os.fsync)(fd)


class LostPayload(BatchFormatError):
    """A reference whose bytes are gone or damaged (a deleted or truncated segment, a power loss)."""


def is_ref(data: bytes | str) -> bool:
    """Whether a batch's stored ``columns_data`` is a reference into a log segment (else: the features inline)."""
    return isinstance(data, bytes) and len(data) == REF_SIZE and data[:4] == REF_MAGIC


def read_columns(segments: LogSegments | None, data: bytes | str) -> dict[str, Any]:
    """A logged batch's ``columns_data`` decoded (store.batchcodec.decode_columns), read from its segment
    when it is a reference; LostPayload when those bytes are gone (or there are no segments to read
    them from: a reference where the database keeps features inline)."""
    if segments is None:
        if is_ref(data):
            raise LostPayload("a log-segment reference, and no log segments beside this database")
        return decode_columns(data)
    return decode_columns(segments.resolve(data))


def segment_name(number: int) -> str:
    """The file name of segment ``number``: ten digits and ".seg"."""
    return f"{number:010d}{SUFFIX}"


def folder_for(db_path: str) -> Path:
    """The folder of the log segments beside the database file ``db_path``."""
    return Path(f"{db_path}-segments")


def _storage_error(exc: OSError, what: str) -> ServiceError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"storage full: {what}: {exc.strerror}", reason="STORAGE_FULL")
    return Unavailable(f"storage unavailable: {what}: {exc.strerror}", reason="STORAGE_UNAVAILABLE")


class LogSegments:
    """Appends payloads to the current segment and reads any segment's; thread-safe."""

    def __init__(
        self, folder: Path, max_bytes: int = MAX_SEGMENT_BYTES, max_span_us: int = MAX_SEGMENT_SPAN_US
    ) -> None:
        self.folder = Path(folder)
        self._max_bytes = max_bytes
        self._max_span_us = max_span_us
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.number = 0  # the segment this process appends to; 0 before its first append
        self._size = 0
        self._first_us = 0
        self._dirty = False
        self._unsynced: list[int] = []  # rotated-out descriptors, fdatasync'ed and closed by sync()
        self._closed = False

    # --- writing (the prediction log's thread) -----------------------------

    def append(self, payload: bytes, created_us: int) -> tuple[bytes, int]:
        """Write ``payload``; returns its reference and the segment's number. Raises ResourceExhausted
        (a full disk) or Unavailable (another I/O failure), with nothing referable written."""
        with self._lock:
            if self._closed:
                raise Unavailable("the server is shutting down", reason="SHUTTING_DOWN")
            if (
                self._fd is None
                or self._size + len(payload) > self._max_bytes
                or created_us - self._first_us > self._max_span_us
            ):
                self._start(created_us)
            assert self._fd is not None
            offset = self._size
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as exc:
                self._cut_back(offset)
                raise _storage_error(exc, f"log segment {segment_name(self.number)}") from None
            self._size += len(payload)
            self._dirty = True
            return _REF.pack(REF_MAGIC, self.number, offset, len(payload), zlib.crc32(payload)), self.number

    def _start(self, created_us: int) -> None:
        """Leave the current segment (to sync()) and open the next one."""
        try:
            self.folder.mkdir(exist_ok=True)
            number = max([*self.numbers(), self.number]) + 1  # never one used before in this process
            fd = os.open(self.folder / segment_name(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _storage_error(exc, f"log segments in {self.folder}") from None
        try:
            os.write(fd, HEADER)
        except OSError as exc:
            os.close(fd)
            os.unlink(self.folder / segment_name(number))
            raise _storage_error(exc, f"log segment {segment_name(number)}") from None
        self._leave()
        self._fd, self.number, self._size, self._first_us, self._dirty = fd, number, len(HEADER), created_us, True

    def _leave(self) -> None:
        """Stop writing the current segment: its descriptor goes to sync() if it holds unsynced bytes."""
        if self._fd is not None:
            if self._dirty:
                self._unsynced.append(self._fd)
            else:
                os.close(self._fd)
            self._fd = None
            self._dirty = False

    def _cut_back(self, size: int) -> None:
        """After a failed write: drop its partial bytes, or, failing that, leave this segment."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            self._leave()

    def sync(self) -> None:
        """fdatasync what was written since the last call (the checkpoint thread calls this)."""
        with self._lock:
            fds = self._unsynced
            self._unsynced = []
            if self._dirty and self._fd is not None:
                fds.append(os.dup(self._fd))
                self._dirty = False
        for fd in fds:
            try:
                _datasync(fd)
            except OSError:
                pass  # the data stays in the kernel's hands; a reader's CRC check still guards it
            finally:
                os.close(fd)

    # --- reading --------------------------------------------------------------

    def resolve(self, data: bytes | str) -> bytes | str:
        """The stored payload: ``data`` itself unless it is a reference."""
        if not is_ref(data):
            return data
        assert isinstance(data, bytes)
        _, number, offset, length, crc = _REF.unpack(data)
        name = segment_name(number)
        try:
            # Opened per read, not kept: no descriptor per segment piles up, and none is closed
            # under a reader by retention (an open file stays readable after its unlink).
            fd = os.open(self.folder / name, os.O_RDONLY)
            try:
                payload = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise LostPayload(f"log segment {name} is missing") from None
        except OSError as exc:
            raise LostPayload(f"log segment {name}: {exc.strerror}") from None
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise LostPayload(
                f"log segment {name}: the {length} bytes at {offset} are "
                + ("cut short" if len(payload) != length else "damaged (CRC mismatch)")
            )
        return payload

    # --- housekeeping ---------------------------------------------------------

    def numbers(self) -> list[int]:
        """The segments on disk."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(n[: -len(SUFFIX)]) for n in names if n.endswith(SUFFIX) and n[: -len(SUFFIX)].isdigit())

    def remove(self, numbers: list[int]) -> list[int]:
        """Delete these segments; returns those that are gone. The one being written is left first (the
        next append starts another), so call this only where no append is in flight (under the
        database's write lock, as ``PredictionRepository`` does)."""
        gone = []
        for number in numbers:
            with self._lock:
                if number == self.number and self._fd is not None:
                    os.close(self._fd)  # its records are all past retention: no need to sync them
                    self._fd, self._dirty = None, False
            try:
                os.unlink(self.folder / segment_name(number))
            except FileNotFoundError:
                pass
            except OSError:
                continue
            gone.append(number)
        return gone

    def close(self) -> None:
        """Stop appending (a later ``append`` raises Unavailable, SHUTTING_DOWN) and fdatasync what was written;
        reading still works."""
        with self._lock:
            self._closed = True
            self._leave()
        self.sync()
