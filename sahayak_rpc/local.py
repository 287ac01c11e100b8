"""Client-side scoring: the champion's artifact, followed live, scored in-process.

    with Client(target) as client, client.local_scorer("scheme-sahayak") as scorer:
        p = scorer.predict({"age": 41.0, ...})   # microseconds, no RPC

The scorer holds a WatchChampion stream, so a promotion or rollback on the
server reaches it within a moment. Its predictions are reported back with
LogPredictions in the background, so the server's monitoring sees them.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc

from . import artifact as art
from ._proto.sahayak.v1 import common_pb2, monitor_pb2, registry_pb2
from .scoring import ScoringModel

if TYPE_CHECKING:
    from .client import Client


class LocalPrediction(NamedTuple):
    """One row scored in-process: its prediction id (the one it is reported under), probability, label, and
    the champion version that scored it. (A named tuple: made on every call, it costs a third of a frozen
    dataclass's microsecond.)"""

    prediction_id: str
    probability: float
    label: bool
    version: int


class LocalScorer:
    """A model's champion, followed live over WatchChampion (across server restarts: a broken stream is
    opened again, the last champion serving meanwhile) and scored in this process; with ``report``, its
    predictions go back with LogPredictions every ``flush_interval_s`` (at most ``max_buffer`` wait; more are
    counted in ``dropped``). Waits up to ``ready_timeout_s`` for the first champion: raises TimeoutError
    without one, SahayakError (NOT_FOUND, say) or artifact.ArtifactError when the watch fails."""

    def __init__(
        self,
        client: Client,
        model: str,
        *,
        report: bool = True,
        flush_interval_s: float = 1.0,
        max_buffer: int = 100_000,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self.model = model
        self._current: tuple[int, ScoringModel] | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._buffer: list[tuple[str, int, dict[str, Any], float, bool, int]] = []
        self._buffer_lock = threading.Lock()
        self._max_buffer = max_buffer
        self._report = report
        self._interval = flush_interval_s
        self._prefix = f"l{secrets.token_hex(6)}"
        self._next = itertools.count(1).__next__
        self.dropped = 0
        self.reported = 0
        self.watch_breaks = 0
        self._call = client.registry.WatchChampion(
            registry_pb2.WatchChampionRequest(model=model), metadata=client.metadata
        )
        self._watcher = threading.Thread(target=self._watch, name="champion-watch", daemon=True)
        self._watcher.start()
        self._flusher = threading.Thread(target=self._flush_loop, name="prediction-report", daemon=True)
        if report:
            self._flusher.start()
        if not self._ready.wait(ready_timeout_s):
            self.close()
            raise TimeoutError(f"no champion for {model!r} within {ready_timeout_s}s")
        if self._error is not None:
            self.close()
            raise self._error

    def __enter__(self) -> LocalScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        """The champion version scoring now (0 before the first one arrives)."""
        return self._current[0] if self._current else 0

    def _watch(self) -> None:
        """Follow the champion. Once one serves, a broken stream (the server restarting, say) is opened
        again after a pause (0.1 s, doubling to 5 s), the last champion serving meanwhile; each break is
        counted in ``watch_breaks``. Before the first champion, a failure ends the watch, for the
        constructor to raise; the client's channel closed ends it too (the last champion keeps serving)."""
        from .client import SahayakError

        pause = 0.1
        while not self._stop.is_set():
            try:
                for message in self._call:
                    # The channel is the trust anchor here: the client checks the
                    # checksum and the structure, not the server's private signature.
                    scoring, info = art.load(message.artifact, keys=None)
                    self._current = (info.version, scoring)
                    self._ready.set()
                    pause = 0.1
            except grpc.RpcError as err:
                if self._current is None and not self._stop.is_set():
                    self._error = SahayakError.from_rpc_error(err)
            except art.ArtifactError as err:
                self._error = err
                break
            if self._current is None or self._stop.wait(pause):
                break
            self.watch_breaks += 1
            pause = min(pause * 2, 5.0)
            try:
                self._call = self._client.registry.WatchChampion(
                    registry_pb2.WatchChampionRequest(model=self.model), metadata=self._client.metadata
                )
            except ValueError:  # "Channel closed!": the client was closed first; the last champion stays
                break
            if self._stop.is_set():  # closed while the new stream opened
                self._call.cancel()
        self._ready.set()

    def predict(self, features: Mapping[str, Any]) -> LocalPrediction:
        """Score one row with the current champion (no validation against the schema)."""
        current = self._current
        if current is None:
            raise RuntimeError("no champion loaded")
        version, model = current
        prob = model.predict_one(features)
        label = prob >= model.threshold
        pid = f"{self._prefix}{self._next():x}"
        if self._report:
            with self._buffer_lock:
                if len(self._buffer) < self._max_buffer:
                    self._buffer.append((pid, version, dict(features), prob, label, time.time_ns() // 1000))
                else:
                    self.dropped += 1
        return LocalPrediction(pid, prob, label, version)

    def _requests(
        self, batch: list[tuple[str, int, dict[str, Any], float, bool, int]]
    ) -> Iterator[monitor_pb2.LogPredictionsRequest]:
        from .client import fill_features

        for start in range(0, len(batch), 5000):
            request = monitor_pb2.LogPredictionsRequest(model=self.model)
            for pid, version, row, prob, label, when in batch[start : start + 5000]:
                p = request.predictions.add(
                    prediction_id=pid,
                    version=version,
                    probability=prob,
                    label=common_pb2.LABEL_POSITIVE if label else common_pb2.LABEL_NEGATIVE,
                )
                p.time.FromMicroseconds(when)
                fill_features(p.features, row)
            yield request

    def flush(self) -> int:
        """Send the buffered predictions now; returns how many the server accepted. When the call fails
        (grpc.RpcError, raised), the batch goes back to the front of the buffer for the next try (what
        the buffer cannot hold is counted in ``dropped``): at least once, so a call that failed after
        the server committed is sent again."""
        with self._buffer_lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return 0
        try:
            response = self._client.monitor.LogPredictions(
                self._requests(batch), timeout=60, metadata=self._client.metadata
            )
        except grpc.RpcError:
            with self._buffer_lock:
                kept = (batch + self._buffer)[: self._max_buffer]
                self.dropped += len(batch) + len(self._buffer) - len(kept)
                self._buffer = kept
            raise
        self.reported += response.accepted
        return int(response.accepted)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except grpc.RpcError:
                pass  # the server is away: the buffer waits for the next try

    def close(self) -> None:
        """Stop following the champion and send what is buffered (given up if the server cannot be reached);
        later calls do nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._call.cancel()
        if self._report:
            if self._flusher.is_alive():
                self._flusher.join(timeout=5)
            try:
                self.flush()
            except grpc.RpcError:
                pass
