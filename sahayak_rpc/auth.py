"""Bearer tokens with roles, and which role each RPC needs.

Tokens live in a TOML file, hashed (SHA-256 of the token; the token itself
is 256 random bits, so a fast hash is the right one)::

    [[tokens]]
    name = "web-backend"          # shows in logs instead of the token
    sha256 = "9f86d081884c7d65..."
    roles = ["predict"]

Roles: ``predict`` (inference, and reading the registry, training runs and
monitoring), ``ingest`` (outcomes, feedback, prediction logs, performance
records), ``operate`` (models, training, promotion, rollback, import/export,
acknowledging alerts and everything ``predict`` may read). A token may hold
several. Health checks, OIP liveness/readiness and (by default) reflection
need no token.

``sahayak-rpc token create`` makes a token and appends its hash to the file;
the server re-reads the file when it changes, so adding or revoking a token
needs no restart.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("sahayak_rpc.auth")

PREDICT, INGEST, OPERATE = "predict", "ingest", "operate"
ROLES = (PREDICT, INGEST, OPERATE)
OPEN: frozenset[str] = frozenset()  # no token needed

_READ = frozenset({PREDICT, OPERATE})
_INGEST = frozenset({INGEST})
_OPERATE = frozenset({OPERATE})
_PREDICT = frozenset({PREDICT})

# Every RPC the server serves, by full method name: the roles that may call
# it (any one suffices). The server refuses to start if a served method is
# missing here, and tests check the table against the service descriptors.
_METHODS: dict[str, dict[str, frozenset[str]]] = {
    "sahayak.v1.InferenceService": {
        "Predict": _PREDICT,
        "PredictBatch": _PREDICT,
        "Recommend": _PREDICT,
    },
    "sahayak.v1.ModelRegistryService": {
        "CreateModel": _OPERATE,
        "GetModel": _READ,
        "ListModels": _READ,
        "UpdateModel": _OPERATE,
        "ListModelVersions": _READ,
        "GetModelVersion": _READ,
        "EvaluateModelVersion": _READ,
        "CompareModelVersions": _READ,
        "SetAlias": _OPERATE,
        "DeleteAlias": _OPERATE,
        "ListAliasHistory": _READ,
        "RollbackModel": _OPERATE,
        "ArchiveModelVersion": _OPERATE,
        "ExportModelVersion": _OPERATE,
        "ImportModelVersion": _OPERATE,
        # The client-side scorer of a predict-only caller needs the champion.
        "WatchChampion": _READ,
    },
    "sahayak.v1.TrainingService": {
        "RecordOutcome": _INGEST,
        "ImportOutcomes": _INGEST,
        "StartTraining": _OPERATE,
        "GetTrainingRun": _READ,
        "ListTrainingRuns": _READ,
        "CancelTrainingRun": _OPERATE,
        "WatchTrainingRun": _READ,
    },
    "sahayak.v1.MonitorService": {
        "GetServerStatus": _READ,
        "LogPredictions": _INGEST,
        "GetPerformance": _READ,
        "GetPerformanceTrend": _READ,
        "RecordPerformance": _INGEST,
        "DetectDrift": _READ,
        "ListAlerts": _READ,
        "AcknowledgeAlert": _OPERATE,
        "WatchAlerts": _READ,
        "RunHealthCheck": _OPERATE,
        "GetMonitoringReport": _READ,
    },
    "sahayak.v1.FeedbackService": {
        "RecordFeedback": _INGEST,
        "ImportFeedback": _INGEST,
        "GetFeedbackSummary": _READ,
    },
    "inference.GRPCInferenceService": {
        # Liveness and readiness probes, like grpc.health.v1, need no token.
        "ServerLive": OPEN,
        "ServerReady": OPEN,
        "ModelReady": _PREDICT,
        "ServerMetadata": _PREDICT,
        "ModelMetadata": _PREDICT,
        "ModelInfer": _PREDICT,
    },
    "grpc.health.v1.Health": {"Check": OPEN, "Watch": OPEN, "List": OPEN},
}
_REFLECTION = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


def required_roles(method: str, open_reflection: bool = True) -> frozenset[str] | None:
    """Roles that may call ``/package.Service/Method``; OPEN for none; None if unknown."""
    _, service, name = method.split("/", 2) if method.count("/") == 2 else ("", "", "")
    if service in _REFLECTION:
        return OPEN if open_reflection else _READ
    return _METHODS.get(service, {}).get(name)


def unmapped(methods: Iterable[str]) -> list[str]:
    """Full method names that have no entry in the role table."""
    return [m for m in methods if required_roles(m) is None]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "sk_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]


class TokenFileError(ValueError):
    """A token file that cannot be used; says where."""


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")


def parse_tokens(text: str, where: str = "tokens file") -> dict[str, Principal]:
    """sha256 hex -> Principal, from the TOML text of a token file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"{where}: {exc}") from None
    entries = data.get("tokens", [])
    if set(data) - {"tokens"} or not isinstance(entries, list):
        raise TokenFileError(f"{where}: expected only [[tokens]] tables")
    out: dict[str, Principal] = {}
    names: set[str] = set()
    for i, entry in enumerate(entries):
        at = f"{where}: tokens[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "sha256", "roles"}:
            raise TokenFileError(f"{at}: keys are name, sha256 and roles")
        name, digest, roles = entry.get("name"), entry.get("sha256"), entry.get("roles")
        if not isinstance(name, str) or not _NAME.match(name):
            raise TokenFileError(f"{at}.name: 1-64 characters of A-Z a-z 0-9 _ . @ : -")
        if name in names:
            raise TokenFileError(f"{at}.name: {name!r} appears twice")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise TokenFileError(f"{at}.sha256: 64 lowercase hex digits (sahayak-rpc token hash)")
        if digest in out:
            raise TokenFileError(f"{at}.sha256: the same token appears twice")
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            raise TokenFileError(f"{at}.roles: a non-empty list of {', '.join(ROLES)}")
        names.add(name)
        out[digest] = Principal(name, frozenset(roles))
    return out


def token_entry(name: str, token: str, roles: Iterable[str]) -> str:
    """The TOML lines that admit ``token``, to append to a token file."""
    roles = list(roles)
    if not _NAME.match(name):
        raise TokenFileError("name: 1-64 characters of A-Z a-z 0-9 _ . @ : -")
    if not roles or any(r not in ROLES for r in roles):
        raise TokenFileError(f"roles: a non-empty list of {', '.join(ROLES)}")
    quoted = ", ".join(f'"{r}"' for r in roles)
    return f'\n[[tokens]]\nname = "{name}"\nsha256 = "{hash_token(token)}"\nroles = [{quoted}]\n'


class TokenStore:
    """The token file, re-read when it changes (checked at most every ``recheck_s``)."""

    def __init__(self, path: str | Path, recheck_s: float = 1.0) -> None:
        self.path = Path(path)
        self._recheck = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._tokens: dict[str, Principal] = {}
        self._internal: dict[str, Principal] = {}
        self._reload()  # a broken file at start-up is fatal; later, the old tokens stay

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            tokens = parse_tokens(self.path.read_text(encoding="utf-8"), str(self.path))
        except OSError as exc:
            raise TokenFileError(f"cannot read tokens file {self.path}: {exc.strerror}") from None
        self._tokens, self._stamp = tokens, stamp

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._recheck:
            return
        with self._lock:
            if now - self._checked < self._recheck:
                return
            self._checked = now
            try:
                self._reload()
            except TokenFileError:
                log.exception("auth.tokens_reload_failed", path=str(self.path))

    def add_internal(self, name: str, roles: Iterable[str]) -> str:
        """A token for the server's own in-process clients (the demo loader); never written anywhere."""
        token = new_token()
        self._internal[hash_token(token)] = Principal(name, frozenset(roles))
        return token

    def lookup(self, token: str) -> Principal | None:
        self._refresh()
        digest = hash_token(token)
        return self._tokens.get(digest) or self._internal.get(digest)

    def __len__(self) -> int:
        return len(self._tokens)


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""
    return None


def decide(
    store: TokenStore, method: str, metadata: Iterable[tuple[str, str | bytes]] | None, open_reflection: bool = True
) -> tuple[Principal | None, str | None, str]:
    """(principal, grpc code name or None if allowed, message)."""
    needed = required_roles(method, open_reflection)
    if needed is None:
        return None, "PERMISSION_DENIED", f"{method} is not in the role table"
    if not needed:
        return None, None, ""
    token = bearer(metadata)
    if token is None:
        return None, "UNAUTHENTICATED", "missing 'authorization: Bearer <token>' metadata"
    principal = store.lookup(token) if token else None
    if principal is None:
        return None, "UNAUTHENTICATED", "invalid bearer token"
    if principal.roles.isdisjoint(needed):
        return (
            principal,
            "PERMISSION_DENIED",
            (f"token {principal.name!r} lacks the role for {method} (needs one of: {', '.join(sorted(needed))})"),
        )
    return principal, None, ""


def role_table() -> Mapping[str, Mapping[str, frozenset[str]]]:
    return _METHODS
