"""The `sahayak-rpc` command: serve, load the demo, and operate a server.

    sahayak-rpc serve [--demo]        run the server
    sahayak-rpc demo                  create the demo model and load outcomes
    sahayak-rpc models [NAME]         list models, or show one
    sahayak-rpc import FILE --model M import a CSV / JSONL file of outcomes
    sahayak-rpc status                the server's status
    sahayak-rpc health                exit 0 when the server is SERVING
    sahayak-rpc config                the effective configuration
    sahayak-rpc backup DEST           copy the database and its log segments (safe while serving)
    sahayak-rpc migrate-db SRC URL    copy a SQLite database into an empty PostgreSQL one
    sahayak-rpc token create          make a bearer token and add its hash to a token file

Client commands take --token (default $SAHAYAK_TOKEN) and, for TLS, --tls-ca,
--tls-cert and --tls-key (defaults $SAHAYAK_TLS_CA, $SAHAYAK_TLS_CERT, $SAHAYAK_TLS_KEY).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

# A server's own environment names its port (as in the Docker image): commands run beside it find it.
DEFAULT_TARGET = os.environ.get("SAHAYAK_TARGET") or f"127.0.0.1:{os.environ.get('SAHAYAK_SERVER_PORT') or 50051}"


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _message(msg: Any) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"sahayak-rpc: cannot read {path}: {exc.strerror}") from None


def _client(args: argparse.Namespace, **kwargs: Any) -> Any:
    """A Client for the command's --target, token and TLS options."""
    from .client import Client

    return Client(
        args.target,
        token=args.token or None,
        ca_cert=_read(args.tls_ca),
        client_cert=_read(args.tls_cert),
        client_key=_read(args.tls_key),
        **kwargs,
    )


def _server_tls(cfg: Any) -> dict[str, Any]:
    """How the in-process demo loader reaches its own server: trusting the server's
    certificate chain (a self-signed certificate, or a chain that ends in its root)."""
    if not cfg.tls_cert:
        return {}
    return {
        "ca_cert": _read(cfg.tls_cert),
        "client_cert": _read(cfg.tls_cert) if cfg.tls_client_ca else None,
        "client_key": _read(cfg.tls_key) if cfg.tls_client_ca else None,
    }


def cmd_token(args: argparse.Namespace) -> int:
    from . import auth

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    token = auth.new_token()
    try:
        entry = auth.token_entry(args.name, token, roles)
        if args.file:
            path = Path(args.file)
            if path.exists():
                existing = auth.parse_tokens(path.read_text(encoding="utf-8"), str(path))
                if any(p.name == args.name for p in existing.values()):
                    raise auth.TokenFileError(f"{path}: a token named {args.name!r} exists; remove it first")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(entry)
    except auth.TokenFileError as exc:
        print(f"sahayak-rpc: {exc}", file=sys.stderr)
        return 2
    if not args.file:
        print(entry.strip(), file=sys.stderr)
    print(token)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from . import config as cfgmod
    from .logs import configure

    cfg = cfgmod.load(args.config, **{name: getattr(args, name) for name in _serve_flags()})
    configure(cfg.log_level)
    if cfg.workers > 1 and args.worker_index is None:
        return _supervise(args, cfg)
    if args.worker_index is not None:
        from .runtime.workers import follow_supervisor

        follow_supervisor()
    from .auth import TokenFileError
    from .runtime.clock import Clock, FileClock, SystemClock
    from .server import Server
    from .store import StoreError

    # Tests of schedules over several processes share one clock through a file (runtime/clock.py).
    clock_file = os.environ.get("SAHAYAK_TEST_CLOCK_FILE")
    clock: Clock = FileClock(clock_file) if clock_file else SystemClock()
    try:
        server = Server(cfg, clock=clock, worker_index=args.worker_index or 0)
        done = server.handle_signals()
        server.start()
    except TokenFileError as exc:
        print(f"sahayak-rpc: {exc}", file=sys.stderr)
        return 2
    except (OSError, StoreError) as exc:
        print(f"sahayak-rpc: {exc}", file=sys.stderr)
        return 1
    if args.demo:
        threading.Thread(target=_serve_demo, args=(server, args.demo_outcomes), name="demo-loader", daemon=True).start()
    server.serve_forever(done)
    return 0


def _supervise(args: argparse.Namespace, cfg: Any) -> int:
    """``serve --workers N``: start N serving processes on one port and watch over them (runtime/workers.py)."""
    from .runtime.workers import PortTaken, Supervisor, claim_address, reserve_port

    port, held = cfg.port, None
    if port == 0:  # the workers must share one port: pick it here
        try:
            held, port = reserve_port(cfg.host)
        except OSError as exc:
            print(f"sahayak-rpc: cannot find a free port on {cfg.host}: {exc.strerror}", file=sys.stderr)
            return 1
    try:
        claim = claim_address(cfg.host, port)
    except PortTaken as exc:
        print(f"sahayak-rpc: {exc}", file=sys.stderr)
        return 1
    try:
        return Supervisor(args.argv[1:], cfg.workers, port, cfg.shutdown_grace_s).run()
    finally:
        claim.close()
        if held is not None:
            held.close()


def _serve_demo(server: Any, n: int) -> None:
    import structlog

    from .client import Client
    from .demo import load_demo

    log = structlog.get_logger("sahayak_rpc.demo")
    host = server.config.host if server.config.host not in ("0.0.0.0", "::", "[::]") else "127.0.0.1"
    try:
        with Client(f"{host}:{server.port}", token=server.internal_token, **_server_tls(server.config)) as client:
            result = load_demo(client, n=n, only_if_new=True)
        log.info("demo.loaded", **dataclasses.asdict(result))
    except Exception:
        log.exception("demo.failed")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import load_demo

    with _client(args) as client:
        bar = _progress(args.outcomes, "outcomes", quiet=args.json)
        result = load_demo(
            client,
            n=args.outcomes,
            seed=args.seed,
            train=not args.no_train,
            progress=bar.update if bar is not None else None,
        )
        if bar is not None:
            bar.close()
    if args.json:
        _print_json(dataclasses.asdict(result))
    else:
        print(
            f"model {result.model}: {result.accepted} outcomes stored, {result.duplicates} already there, "
            f"{result.rejected} rejected; expected Bayes-optimal accuracy {result.expected_bayes_accuracy:.4f}"
        )
        t = result.training
        if t:
            m = t["validation_metrics"]
            print(f"training {t['run_id']}: {t['end_reason']}")
            if m:
                print(
                    f"  champion validation accuracy {m.get('accuracy', 0):.4f}, F1 {m.get('f1', 0):.4f}, "
                    f"ROC AUC {m.get('roc_auc', 0):.4f}, calibration error {m.get('calibration_error', 0):.4f}"
                )
                print(
                    f"  Bayes-optimal accuracy on the same {t['validation_rows']} rows "
                    f"{t['bayes_optimal_accuracy']:.4f} (gap {t['accuracy_gap_pp']:.2f} points)"
                )
    return 0 if result.rejected == 0 else 1


def _progress(total: int | None, unit: str, quiet: bool = False) -> Any:
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=f" {unit}", unit_scale=True, file=sys.stderr, disable=not sys.stderr.isatty())


def cmd_models(args: argparse.Namespace) -> int:

    with _client(args) as client:
        if args.name:
            _print_json(_message(client.get_model(args.name)))
        else:
            models = list(client.list_models())
            if args.json:
                _print_json([_message(m) for m in models])
            else:
                for m in models:
                    print(f"{m.name}\t{len(m.features)} features\t{m.description}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .api.convert_registry import schema_from_proto
    from .outcome_files import read_outcomes

    path = Path(args.file)
    if not path.is_file():
        print(f"sahayak-rpc: no such file: {path}", file=sys.stderr)
        return 2
    with _client(args) as client:
        schema = schema_from_proto(client.get_model(args.model))
        unreadable: list[str] = []
        bar = _progress(None, "rows", quiet=args.json)

        def rows() -> Any:
            for parsed in read_outcomes(path, schema):
                if parsed.outcome is None:
                    unreadable.append(f"line {parsed.line}: {parsed.error}")
                else:
                    yield parsed.outcome

        report = client.import_outcomes(
            args.model, rows(), batch_size=args.batch_size, progress=bar.update if bar is not None else None
        )
        if bar is not None:
            bar.close()
    summary = {
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "rejected": report.rejected + len(unreadable),
        "unreadable_lines": unreadable[:100],
        "errors": [
            {"index": e.index, "outcome_id": e.id, "field": e.field, "reason": e.reason} for e in report.errors[:100]
        ],
    }
    if args.json:
        _print_json(summary)
    else:
        print(f"{report.accepted} stored, {report.duplicates} already there, {summary['rejected']} rejected")
        for line in unreadable[:20]:
            print(f"  {line}")
        for e in report.errors[:20]:
            print(f"  row {e.index} ({e.id}): {e.field}: {e.reason}")
    return 0 if summary["rejected"] == 0 else 1


def cmd_status(args: argparse.Namespace) -> int:

    with _client(args) as client:
        status = client.server_status()
    if args.json:
        _print_json(_message(status))
        return 0
    print(f"sahayak-rpc {status.server_version}, up {status.uptime.seconds}s")
    for m in status.models:
        print(
            f"  {m.model}: serving version {m.serving_version or '-'}, {m.outcome_count} outcomes, "
            f"{m.labels_since_training} since training"
        )
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the server reports SERVING (the Docker HEALTHCHECK uses this)."""

    with _client(args, timeout=args.timeout) as client:
        status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def cmd_config(args: argparse.Namespace) -> int:
    from . import config as cfgmod

    if not args.explain:
        _print_json(cfgmod.describe(cfgmod.load(args.config)))
    elif args.json:
        _print_json(cfgmod.explain(args.config))
    else:
        print(cfgmod.explain_text(cfgmod.explain(args.config)), end="")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """An online copy of the database and its log segments (store/backup.py), on this machine."""
    from . import config as cfgmod
    from .store.backup import BackupError, backup

    cfg = cfgmod.load(args.config, db=args.db)
    from .store import is_postgres_url

    if is_postgres_url(cfg.db):
        print(
            "sahayak-rpc: backup copies a SQLite database and its log segments; a PostgreSQL database is"
            " backed up with PostgreSQL's own tools (pg_dump, or base backups with WAL archiving):"
            " see docs/scale-out.md",
            file=sys.stderr,
        )
        return 2
    try:
        result = backup(cfg.db, args.destination)
    except BackupError as exc:
        print(f"sahayak-rpc: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(dataclasses.asdict(result))
    else:
        print(
            f"backed up {cfg.db} to {result.path}: {result.pages} pages, {result.segments} log segments "
            f"({result.segment_bytes} bytes)"
            + (f"; {result.segments_gone} deleted by retention meanwhile" if result.segments_gone else "")
        )
    return 0


def cmd_migrate_db(args: argparse.Namespace) -> int:
    """Copy a SQLite database (and its log segments) into an empty PostgreSQL database (store/transfer.py)."""
    from .store.transfer import run_cli

    return run_cli(args.source, args.target, args.json)


def _serve_flags() -> dict[str, Any]:
    """`serve`'s flags for settings: the load() keyword (and argparse dest) -> its declaration."""
    from . import config as cfgmod

    return {cfgmod.keyword(d): d for d in cfgmod.SETTINGS if d.spec.flag}


def _flag_type(d: Any) -> Any:
    """How a flag's text becomes the setting's value (a duration takes a unit, as in the TOML file)."""
    from . import config as cfgmod

    if d.spec.kind == "duration":
        return lambda text: cfgmod.parse_duration(text, d.spec.flag)
    return {"int": int, "float": float, "str": str, "enum": str}[d.spec.kind]


def build_parser() -> argparse.ArgumentParser:
    from . import fields

    parser = argparse.ArgumentParser(prog="sahayak-rpc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the server")
    p.add_argument("--config", help="TOML configuration file")
    for name, d in _serve_flags().items():  # the settings that declare a flag (config.py)
        doc = f"{d.spec.doc} (default {fields.show(d.default, d.spec.kind)}; {d.spec.toml}, ${d.spec.env})"
        p.add_argument(
            d.spec.flag, dest=name, type=_flag_type(d), choices=d.spec.choices or None, help=doc.replace("%", "%%")
        )
    p.add_argument("--demo", action="store_true", help="create the Scheme Sahayak demo model and load demo outcomes")
    p.add_argument("--demo-outcomes", type=int, default=20_000, help="demo outcomes to load (default 20000)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the --workers supervisor
    p.set_defaults(func=cmd_serve)

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--target",
            default=DEFAULT_TARGET,
            help="server address (default $SAHAYAK_TARGET, else 127.0.0.1:$SAHAYAK_SERVER_PORT, else 127.0.0.1:50051)",
        )
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--token", default=os.environ.get("SAHAYAK_TOKEN"), help="bearer token (default $SAHAYAK_TOKEN)")
        p.add_argument(
            "--tls-ca", default=os.environ.get("SAHAYAK_TLS_CA"), help="connect with TLS, trusting this CA (PEM)"
        )
        p.add_argument(
            "--tls-cert", default=os.environ.get("SAHAYAK_TLS_CERT"), help="client certificate (PEM), for mutual TLS"
        )
        p.add_argument("--tls-key", default=os.environ.get("SAHAYAK_TLS_KEY"), help="client private key (PEM)")

    p = sub.add_parser("demo", help="create the demo model, load generated outcomes and train a champion")
    target(p)
    p.add_argument("--outcomes", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="load the outcomes only")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list models, or show one")
    target(p)
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("import", help="import a CSV or JSONL file of outcomes")
    target(p)
    p.add_argument("file")
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=1000)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("status", help="the server's status")
    target(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("health", help="check the server's gRPC health (exit 0 when SERVING)")
    target(p)
    p.add_argument("--service", default="", help="a service name (default: the whole server)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("token", help="manage bearer tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="print a new token; its hash goes to --file (or stderr)")
    t.add_argument("--name", required=True, help="shows in logs in place of the token")
    t.add_argument("--roles", required=True, help="comma-separated: predict, ingest, operate")
    t.add_argument("--file", help="token file to append to (created with mode 0600)")
    t.set_defaults(func=cmd_token)

    p = sub.add_parser("config", help="print the effective configuration")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument(
        "--explain",
        action="store_true",
        help="every setting with its value, where that came from, its default, bounds and doc",
    )
    p.add_argument("--json", action="store_true", help="with --explain: print JSON")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("backup", help="copy the database and its log segments (safe while the server runs)")
    p.add_argument("destination", help="the copy's database file (must not exist; its segments go beside it)")
    p.add_argument("--db", help="the database (default: the configuration's, sahayak.db)")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("migrate-db", help="copy a stopped server's SQLite database into an empty PostgreSQL database")
    p.add_argument(
        "source", help="the SQLite database file (stop its server first; an older file is upgraded in place)"
    )
    p.add_argument("target", help="a postgresql:// URL of an empty database")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_migrate_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = ["sahayak-rpc", *argv]
    from .client import SahayakError
    from .config import ConfigError

    try:
        return int(args.func(args))
    except ConfigError as exc:  # a bad value in the file, the environment or a flag: named, exit 2
        print(f"sahayak-rpc: {exc}", file=sys.stderr)
        return 2
    except SahayakError as err:
        print(f"sahayak-rpc: {err}", file=sys.stderr)
        for v in err.violations:
            print(f"  {v.field}: {v.description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
