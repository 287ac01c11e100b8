"""Server configuration: defaults < TOML file < SAHAYAK_* environment < flags.

A TOML file has the sections [server], [training], [gate] and [monitoring];
every key may also come from the environment as SAHAYAK_<SECTION>_<KEY>
(e.g. SAHAYAK_SERVER_PORT=6000, SAHAYAK_TRAINING_RETRAIN_INTERVAL=3d).
Durations are seconds or a number with a unit: 90s, 5m, 2h, 7d.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import settings as ms

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


class ConfigError(ValueError):
    """A configuration value that cannot be used; names the key."""


def parse_duration(value: object, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{key}: expected a duration like 90s, 5m, 7d; got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    db: str = "sahayak.db"
    # Each open stream (WatchAlerts, WatchChampion, WatchTrainingRun) holds a
    # worker thread for its life, so there are many.
    max_workers: int = 256
    # Concurrent RPCs beyond this answer RESOURCE_EXHAUSTED instead of queueing.
    max_concurrent_rpcs: int = 512
    max_message_bytes: int = 64 * 1024 * 1024
    # "full" fsyncs every commit (durable across power loss); "normal" is
    # durable across a process crash only, and faster.
    synchronous: str = "full"
    # How long a write waits for a lock that another process holds on the
    # database before it answers UNAVAILABLE (reason DATABASE_LOCKED).
    busy_timeout_s: float = 5.0
    # Cap on the database file, in pages of 4 KiB (0: none); a write that
    # would grow it further answers RESOURCE_EXHAUSTED, as on a full disk.
    # A quota, and the fault tests' way to fill the "disk" without root.
    max_db_pages: int = 0
    keepalive_time_s: float = 60.0
    shutdown_grace_s: float = 10.0
    log_level: str = "info"
    # Prometheus /metrics on this port (0: off).
    metrics_port: int = 0
    # Threads one training run may use (OpenMP); the rest of the cores keep serving.
    training_threads: int = 1
    health_check_interval_s: float = 300.0
    # Every served prediction goes to the prediction log (off: nothing to monitor).
    log_predictions: bool = True
    prediction_retention_s: float = 7 * ms.DAY
    # TLS: certificate chain and key (PEM files). With client_ca, clients must
    # present a certificate it signed (mutual TLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Without TLS the server listens only on loopback, unless this says otherwise.
    allow_plaintext: bool = False
    # Bearer tokens with roles (see sahayak_rpc/auth.py); empty: no authentication.
    tokens_file: str = ""
    open_reflection: bool = True
    # Streams (either direction) one client may hold open at once; a client is
    # its token's name, or its address without a token.
    max_streams_per_client: int = 64
    # Messages one client stream may send (ImportOutcomes, ImportFeedback, ...).
    max_stream_messages: int = 100_000
    performance_retention_s: float = 30 * ms.DAY
    # Serving processes on this machine, sharing the port (SO_REUSEPORT); see docs/scale-out.md.
    workers: int = 1
    # How often a replica heartbeats its row, its training runs and the leader lock.
    heartbeat_interval_s: float = 1.0
    # Connections each process keeps to PostgreSQL (SQLite: unused).
    db_pool_size: int = 10
    # Whether this replica claims and runs queued training runs (false: it only serves).
    training_worker: bool = True
    # A running run whose heartbeat does not move for this long is failed by the leader.
    run_heartbeat_timeout_s: float = 30.0
    model_defaults: ms.ModelSettings = field(default_factory=ms.ModelSettings)


# (section, key) -> (attribute path, kind)
_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("server", "host"): ("host", "str"),
    ("server", "port"): ("port", "int"),
    ("server", "db"): ("db", "str"),
    ("server", "max_workers"): ("max_workers", "int"),
    ("server", "max_concurrent_rpcs"): ("max_concurrent_rpcs", "int"),
    ("server", "max_message_bytes"): ("max_message_bytes", "int"),
    ("server", "synchronous"): ("synchronous", "str"),
    ("server", "busy_timeout"): ("busy_timeout_s", "duration"),
    ("server", "max_db_pages"): ("max_db_pages", "int"),
    ("server", "keepalive_time"): ("keepalive_time_s", "duration"),
    ("server", "shutdown_grace"): ("shutdown_grace_s", "duration"),
    ("server", "log_level"): ("log_level", "str"),
    ("server", "metrics_port"): ("metrics_port", "int"),
    ("server", "tls_cert"): ("tls_cert", "str"),
    ("server", "tls_key"): ("tls_key", "str"),
    ("server", "tls_client_ca"): ("tls_client_ca", "str"),
    ("server", "allow_plaintext"): ("allow_plaintext", "bool"),
    ("server", "max_streams_per_client"): ("max_streams_per_client", "int"),
    ("server", "max_stream_messages"): ("max_stream_messages", "int"),
    ("server", "workers"): ("workers", "int"),
    ("server", "heartbeat_interval"): ("heartbeat_interval_s", "duration"),
    ("server", "db_pool_size"): ("db_pool_size", "int"),
    ("auth", "tokens_file"): ("tokens_file", "str"),
    ("auth", "open_reflection"): ("open_reflection", "bool"),
    ("training", "threads"): ("training_threads", "int"),
    ("training", "worker"): ("training_worker", "bool"),
    ("training", "heartbeat_timeout"): ("run_heartbeat_timeout_s", "duration"),
    ("training", "retrain_interval"): ("training.retrain_interval_s", "duration"),
    ("training", "incremental_every"): ("training.incremental_every", "int"),
    ("training", "validation_fraction"): ("training.validation_fraction", "float"),
    ("training", "split"): ("training.split", "str"),
    ("training", "min_samples"): ("training.min_samples", "int"),
    ("training", "families"): ("training.families", "list"),
    ("training", "learning_rate"): ("training.logistic_regression.learning_rate", "float"),
    ("training", "l2"): ("training.logistic_regression.l2", "float"),
    ("training", "tolerance"): ("training.logistic_regression.tolerance", "float"),
    ("training", "max_iterations"): ("training.logistic_regression.max_iterations", "int"),
    ("training", "random_seed"): ("training.random_seed", "int"),
    ("training", "schedule_enabled"): ("training.schedule_enabled", "bool"),
    ("training", "decision_threshold"): ("decision_threshold", "float"),
    ("gate", "min_accuracy"): ("gate.min_accuracy", "float"),
    ("gate", "min_f1"): ("gate.min_f1", "float"),
    ("gate", "max_calibration_error"): ("gate.max_calibration_error", "float"),
    ("gate", "max_roc_auc_drop"): ("gate.max_roc_auc_drop", "float"),
    ("gate", "min_log_loss_gain"): ("gate.min_log_loss_gain", "float"),
    ("monitoring", "health_check_interval"): ("health_check_interval_s", "duration"),
    ("monitoring", "log_predictions"): ("log_predictions", "bool"),
    ("monitoring", "prediction_retention"): ("prediction_retention_s", "duration"),
    ("monitoring", "performance_retention"): ("performance_retention_s", "duration"),
    ("monitoring", "drift_psi_threshold"): ("monitoring.drift_psi_threshold", "float"),
    ("monitoring", "drift_share"): ("monitoring.drift_share", "float"),
    ("monitoring", "alert_cooldown"): ("monitoring.alert_cooldown_s", "duration"),
    ("monitoring", "freshness_limit"): ("monitoring.freshness_limit_s", "duration"),
    ("monitoring", "retrain_on_breach"): ("monitoring.retrain_on_breach", "bool"),
}
_SERVER_ONLY = {"host", "port", "db", "max_workers", "max_concurrent_rpcs", "max_message_bytes", "synchronous",
                "busy_timeout_s", "max_db_pages",
                "keepalive_time_s", "shutdown_grace_s", "log_level", "health_check_interval_s", "training_threads", "metrics_port",
                "log_predictions", "tls_cert", "tls_key", "tls_client_ca", "allow_plaintext", "tokens_file",
                "open_reflection", "max_streams_per_client", "max_stream_messages",
                "prediction_retention_s", "performance_retention_s", "workers", "heartbeat_interval_s",
                "db_pool_size", "training_worker", "run_heartbeat_timeout_s"}


def _coerce(value: object, kind: str, key: str) -> Any:
    try:
        if kind == "duration":
            return parse_duration(value, key)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)  # type: ignore[call-overload]
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)  # type: ignore[arg-type]
        if kind == "list":
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)  # type: ignore[attr-defined]
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {kind}, got {value!r}") from None


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerConfig:
    """Build the configuration from defaults, a TOML file, the environment and overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
            for key, value in table.items():
                spec = _KEYS.get((section, key))
                if spec is None:
                    raise ConfigError(f"{path}: unknown setting [{section}] {key}")
                values[spec[0]] = _coerce(value, spec[1], f"[{section}] {key}")
    env = os.environ if env is None else env
    for (section, key), (attr, kind) in _KEYS.items():
        name = f"SAHAYAK_{section}_{key}".upper()
        if name in env:
            values[attr] = _coerce(env[name], kind, name)
    for attr, value in overrides.items():
        if value is not None:
            values[attr] = value
    return _build(values)


def _build(values: dict[str, Any]) -> ServerConfig:
    server = {k: v for k, v in values.items() if k in _SERVER_ONLY}
    model: dict[str, Any] = {}
    for attr, value in values.items():
        if attr in _SERVER_ONLY:
            continue
        node = model
        *parents, leaf = attr.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    defaults = ms.from_dict(model)
    errors = ms.check_settings(defaults, prefix="config")
    if errors:
        raise ConfigError("; ".join(f"{e.field}: {e.reason}" for e in errors))
    cfg = ServerConfig(model_defaults=defaults, **server)
    if cfg.synchronous not in ("full", "normal"):
        raise ConfigError("[server] synchronous: must be 'full' or 'normal'")
    if cfg.busy_timeout_s < 0 or cfg.max_db_pages < 0:
        raise ConfigError("[server] busy_timeout and max_db_pages: must not be negative")
    if not 0 <= cfg.metrics_port <= 65535:
        raise ConfigError("[server] metrics_port: must be in 0-65535 (0: off)")
    if not 0 <= cfg.port <= 65535:
        raise ConfigError("[server] port: must be in 0-65535")
    if cfg.max_workers < 4:
        raise ConfigError("[server] max_workers: must be at least 4")
    if not 1 <= cfg.training_threads <= 256:
        raise ConfigError("[training] threads: must be 1-256")
    if cfg.max_message_bytes < 1024:
        raise ConfigError("[server] max_message_bytes: must be at least 1024")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("[server] tls_cert and tls_key: set both or neither")
    if cfg.tls_client_ca and not cfg.tls_cert:
        raise ConfigError("[server] tls_client_ca: mutual TLS needs tls_cert and tls_key too")
    if not cfg.tls_cert and not cfg.allow_plaintext and not is_loopback(cfg.host):
        raise ConfigError(f"[server] host: {cfg.host} is not a loopback address; configure tls_cert and tls_key, "
                          "or set allow_plaintext = true to serve without TLS")
    if cfg.max_streams_per_client < 1 or cfg.max_stream_messages < 1:
        raise ConfigError("[server] max_streams_per_client and max_stream_messages: must be at least 1")
    if not 1 <= cfg.workers <= 256:
        raise ConfigError("[server] workers: must be 1-256")
    if not 1 <= cfg.db_pool_size <= 1000:
        raise ConfigError("[server] db_pool_size: must be 1-1000")
    if not 0.05 <= cfg.heartbeat_interval_s <= 60:
        raise ConfigError("[server] heartbeat_interval: must be between 50ms and 60s")
    if cfg.run_heartbeat_timeout_s < 3 * cfg.heartbeat_interval_s:
        raise ConfigError("[training] heartbeat_timeout: must be at least three heartbeat intervals")
    for name in ("health_check_interval_s", "prediction_retention_s", "performance_retention_s"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name[:-2]}: must be positive")
    return cfg


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def describe(cfg: ServerConfig) -> dict[str, Any]:
    """The effective configuration, for logs and `sahayak-rpc config`."""
    return dataclasses.asdict(cfg)
