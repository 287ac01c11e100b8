"""Server configuration: defaults < TOML file < SAHAYAK_* environment < flags.

A TOML file has the sections [server], [auth], [training], [gate] and [monitoring];
every key may also come from the environment as SAHAYAK_<SECTION>_<KEY>
(e.g. SAHAYAK_SERVER_PORT=6000, SAHAYAK_TRAINING_RETRAIN_INTERVAL=3d).
Durations are seconds or a number with a unit: 90s, 5m, 2h, 7d.

Each setting is declared once (fields.py): the server-wide ones below in ServerConfig,
the per-model defaults in settings.py. Keys, environment variables, `serve` flags,
bounds, `sahayak-rpc config --explain` and the README's table all come from those.
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
from .fields import Declared, build, declared, setting, show

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
    host: str = setting(
        "127.0.0.1",
        "str",
        "listen address; beyond loopback it needs TLS or allow_plaintext",
        key=("server", "host"),
        flag="--host",
    )
    port: int = setting(
        50051, "int", "port (0 picks a free one)", key=("server", "port"), lo=0, hi=65535, flag="--port"
    )
    db: str = setting(
        "sahayak.db",
        "str",
        "a SQLite database file, or a postgresql:// URL (docs/scale-out.md)",
        key=("server", "db"),
        flag="--db",
    )
    # Each open stream (WatchAlerts, WatchChampion, WatchTrainingRun) holds a
    # worker thread for its life, so there are many.
    max_workers: int = setting(
        256, "int", "worker threads; each open stream holds one", key=("server", "max_workers"), lo=4
    )
    max_concurrent_rpcs: int = setting(
        512, "int", "concurrent RPCs beyond this answer RESOURCE_EXHAUSTED", key=("server", "max_concurrent_rpcs")
    )
    max_message_bytes: int = setting(
        64 * 1024 * 1024, "int", "largest gRPC message, both directions", key=("server", "max_message_bytes"), lo=1024
    )
    synchronous: str = setting(
        "full",
        "enum",
        "full: fsync every commit; normal: durable across a process crash only "
        "(SQLite; PostgreSQL commits every acknowledged write synchronously, except the "
        "served-prediction log's)",
        key=("server", "synchronous"),
        choices=("full", "normal"),
    )
    busy_timeout_s: float = setting(
        5.0,
        "duration",
        "a write waits this long for a lock another process holds, then answers UNAVAILABLE (DATABASE_LOCKED)",
        key=("server", "busy_timeout"),
        lo=0,
    )
    # A quota, and the fault tests' way to fill the "disk" without root.
    max_db_pages: int = setting(
        0,
        "int",
        "cap on the database file in 4 KiB pages (0: none); a write past it answers "
        "RESOURCE_EXHAUSTED (STORAGE_FULL), and logged batches are stored in the database",
        key=("server", "max_db_pages"),
        lo=0,
    )
    keepalive_time_s: float = setting(
        60.0, "duration", "gRPC keepalive ping interval", key=("server", "keepalive_time"), lo=0
    )
    shutdown_grace_s: float = setting(
        10.0, "duration", "how long open RPCs may finish at shutdown", key=("server", "shutdown_grace"), lo=0
    )
    log_level: str = setting(
        "info",
        "enum",
        "log level",
        key=("server", "log_level"),
        choices=("debug", "info", "warning", "error"),
        flag="--log-level",
    )
    metrics_port: int = setting(
        0,
        "int",
        "Prometheus /metrics over HTTP on this port (0: off)",
        key=("server", "metrics_port"),
        lo=0,
        hi=65535,
        flag="--metrics-port",
    )
    # Threads one training run may use (OpenMP); the rest of the cores keep serving.
    training_threads: int = setting(
        1, "int", "OpenMP threads per training run", key=("training", "threads"), lo=1, hi=256
    )
    health_check_interval_s: float = setting(
        300.0,
        "duration",
        "period of the health check and retention",
        key=("monitoring", "health_check_interval"),
        lo=0,
        lo_open=True,
    )
    log_predictions: bool = setting(
        True,
        "bool",
        "served predictions go to the prediction log (false: nothing to monitor)",
        key=("monitoring", "log_predictions"),
    )
    prediction_retention_s: float = setting(
        7 * ms.DAY,
        "duration",
        "how long logged predictions are kept",
        key=("monitoring", "prediction_retention"),
        lo=0,
        lo_open=True,
    )
    tls_cert: str = setting(
        "", "str", "server certificate chain (PEM); turns TLS on", key=("server", "tls_cert"), flag="--tls-cert"
    )
    tls_key: str = setting("", "str", "server private key (PEM)", key=("server", "tls_key"), flag="--tls-key")
    tls_client_ca: str = setting(
        "",
        "str",
        "require client certificates signed by this CA (mutual TLS)",
        key=("server", "tls_client_ca"),
        flag="--tls-client-ca",
    )
    allow_plaintext: bool = setting(
        False, "bool", "serve without TLS on a non-loopback host", key=("server", "allow_plaintext")
    )
    tokens_file: str = setting(
        "",
        "str",
        "bearer tokens with roles (sahayak_rpc/auth.py); empty: no authentication",
        key=("auth", "tokens_file"),
        flag="--tokens-file",
    )
    open_reflection: bool = setting(
        True, "bool", "gRPC reflection answers without a token", key=("auth", "open_reflection")
    )
    # A client is its token's name, or its address without a token.
    max_streams_per_client: int = setting(
        64,
        "int",
        "streams one client may hold open; RESOURCE_EXHAUSTED beyond",
        key=("server", "max_streams_per_client"),
        lo=1,
    )
    max_stream_messages: int = setting(
        100_000,
        "int",
        "messages one client stream may send; RESOURCE_EXHAUSTED beyond",
        key=("server", "max_stream_messages"),
        lo=1,
    )
    performance_retention_s: float = setting(
        30 * ms.DAY,
        "duration",
        "how long realised-performance records are kept",
        key=("monitoring", "performance_retention"),
        lo=0,
        lo_open=True,
    )
    workers: int = setting(
        1,
        "int",
        "serving processes on this machine, sharing the port (docs/scale-out.md)",
        key=("server", "workers"),
        lo=1,
        hi=256,
        flag="--workers",
    )
    heartbeat_interval_s: float = setting(
        1.0,
        "duration",
        "how often a replica heartbeats its row, its training runs and the leader lock",
        key=("server", "heartbeat_interval"),
        lo=0.05,
        hi=60,
    )
    db_pool_size: int = setting(
        10, "int", "PostgreSQL connections per process (SQLite: unused)", key=("server", "db_pool_size"), lo=1, hi=1000
    )
    training_worker: bool = setting(
        True,
        "bool",
        "this replica claims and runs queued training runs (false: it only serves)",
        key=("training", "worker"),
    )
    run_heartbeat_timeout_s: float = setting(
        30.0,
        "duration",
        "a running run whose heartbeat stops this long is failed by the leader (at least three heartbeat intervals)",
        key=("training", "heartbeat_timeout"),
        lo=0,
    )
    model_defaults: ms.ModelSettings = field(default_factory=ms.ModelSettings)


# Every setting, server-wide and per-model default, in declaration order.
SETTINGS = declared(ServerConfig)
_BY_KEY = {d.spec.key: d for d in SETTINGS if d.spec.key}


def per_model(d: Declared) -> bool:
    """A per-model setting (its value here is the default for new models), not a server-wide one."""
    return d.attrs[0] == "model_defaults"


def keyword(d: Declared) -> str:
    """The keyword ``load`` takes for it: the attribute ("busy_timeout_s", "training.retrain_interval_s")."""
    return ".".join(d.attrs[1:] if per_model(d) else d.attrs)


def _label(d: Declared) -> str:
    """How errors name it: its TOML key, and for a per-model setting its field path."""
    if not per_model(d):
        return d.spec.toml
    path = "config." + d.path.removeprefix("model_defaults.")
    return f"{d.spec.toml} ({path})" if d.spec.key else path


_BY_NAME = {keyword(d): d for d in SETTINGS}
_BY_PATH = {d.path.removeprefix("model_defaults."): d for d in SETTINGS if per_model(d)}


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
    """Build the configuration from defaults, a TOML file, the environment and overrides.

    An override is named by its attribute: ``port``, ``busy_timeout_s``, ``training.retrain_interval_s``.
    """
    return _build({attrs: value for attrs, (value, _) in _gather(path, env, overrides).items()})


def _gather(
    path: str | Path | None, env: Mapping[str, str] | None, overrides: Mapping[str, Any]
) -> dict[tuple[str, ...], tuple[Any, str]]:
    """Each value set other than by default, by attribute path, with where it came from."""
    found: dict[tuple[str, ...], tuple[Any, str]] = {}
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
                d = _BY_KEY.get((section, key))
                if d is None:
                    raise ConfigError(f"{path}: unknown setting [{section}] {key}")
                found[d.attrs] = (_coerce(value, d.spec.kind, d.spec.toml), f"file {path}")
    env = os.environ if env is None else env
    for d in SETTINGS:
        if d.spec.key and d.spec.env in env:
            found[d.attrs] = (_coerce(env[d.spec.env], d.spec.kind, d.spec.env), f"env {d.spec.env}")
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in _BY_NAME:
            raise TypeError(f"unknown setting {name!r}")
        found[_BY_NAME[name].attrs] = (value, "flag")
    return found


def _build(values: dict[tuple[str, ...], Any]) -> ServerConfig:
    cfg = build(ServerConfig, values)
    errors = [f"{_label(d)}: {d.spec.rule()}" for d in SETTINGS if not per_model(d) and not d.spec.allows(d.get(cfg))]
    for e in ms.check_settings(cfg.model_defaults, prefix="config"):
        d = _BY_PATH.get(e.field.removeprefix("config."))
        errors.append(f"{_label(d) if d else e.field}: {e.reason}")
    if errors:
        raise ConfigError("; ".join(errors))
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("[server] tls_cert and tls_key: set both or neither")
    if cfg.tls_client_ca and not cfg.tls_cert:
        raise ConfigError("[server] tls_client_ca: mutual TLS needs tls_cert and tls_key too")
    if not cfg.tls_cert and not cfg.allow_plaintext and not is_loopback(cfg.host):
        raise ConfigError(
            f"[server] host: {cfg.host} is not a loopback address; configure tls_cert and tls_key, "
            "or set allow_plaintext = true to serve without TLS"
        )
    if cfg.run_heartbeat_timeout_s < 3 * cfg.heartbeat_interval_s:
        raise ConfigError("[training] heartbeat_timeout: must be at least three heartbeat intervals")
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


def explain(
    path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> list[dict[str, Any]]:
    """Every setting with its current value, where that came from, its default, bounds and doc
    (`sahayak-rpc config --explain`)."""
    found = _gather(path, env, overrides)
    cfg = _build({attrs: value for attrs, (value, _) in found.items()})
    return [
        {
            "key": d.spec.toml,
            "setting": d.path.removeprefix("model_defaults."),
            "scope": "model" if per_model(d) else "server",
            "kind": d.spec.kind,
            "value": d.get(cfg),
            "source": found.get(d.attrs, (None, "default"))[1],
            "default": d.default,
            "bounds": d.spec.rule(),
            "env": d.spec.env,
            "flag": d.spec.flag,
            "doc": d.spec.doc,
        }
        for d in _documented_order()
    ]


def _documented_order() -> list[Declared]:
    """Settings by TOML section ([server], [auth], [training], [gate], [monitoring]; per model only last)."""
    sections = ["server", "auth", "training", "gate", "monitoring"]
    return sorted(SETTINGS, key=lambda d: sections.index(d.spec.key[0]) if d.spec.key else len(sections))


def settings_table() -> str:
    """The README's table of settings, made from the declarations (tests/unit/test_config.py checks the README has it)."""
    lines = ["| key | default | allowed | per model | meaning |", "|---|---|---|---|---|"]
    for d in _documented_order():
        key = (
            f"`{d.spec.toml}`"
            if d.spec.key
            else f"`settings.{d.path.removeprefix('model_defaults.')}` (per model only)"
        )
        allowed = d.spec.rule().removeprefix("must be ").removeprefix("must ")
        cells = [key, f"`{show(d.default, d.spec.kind)}`", allowed, "yes" if per_model(d) else "", d.spec.doc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def explain_text(rows: list[dict[str, Any]]) -> str:
    """`sahayak-rpc config --explain` for a terminal: one setting a paragraph."""
    out = []
    for r in rows:
        kind = r["kind"]
        name = r["key"] or f"settings.{r['setting']} (per model only)"
        out.append(f"{name} = {show(r['value'], kind)}  ({r['source']})")
        where = [w for w in (r["env"], r["flag"]) if w]
        facts = [
            f"default {show(r['default'], kind)}",
            *([r["bounds"]] if r["bounds"] else []),
            *(["per-model default"] if r["scope"] == "model" and r["key"] else []),
            *where,
        ]
        out.append(f"    {r['doc']}")
        out.append(f"    {'; '.join(facts)}")
    return "\n".join(out) + "\n"
