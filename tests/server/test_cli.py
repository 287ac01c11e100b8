"""The `sahayak-rpc` command against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sahayak_rpc import cli

from ..helpers import Running

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_a_csv_file_with_good_and_bad_lines(running: Running, small_model: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "outcome_id,age,income,craft,region,has_card,label,occurred_at,entity.artisan_id,meta.note\n"
        "c1,41,150000,weaver,north,true,approved,2025-05-01T10:00:00Z,A1,first\n"
        "c2,35,,potter,,false,rejected,,A2,\n"
        "c3,abc,1,potter,,false,rejected,,,\n"  # unreadable number
        "c4,12,1,potter,,false,1,,,\n"  # below the minimum age: the server rejects it
    )
    code, out, err = run(capsys, "import", str(path), "--model", small_model, "--target", running.target, "--json")
    summary = json.loads(out)
    assert code == 1  # something was rejected
    assert (summary["accepted"], summary["rejected"]) == (2, 2)
    assert "line 4" in summary["unreadable_lines"][0]
    assert summary["errors"][0]["field"] == "outcome.features.age"
    model = running.server.catalog.get(small_model)
    rec = running.server.ctx.outcomes.get(model.id, "c1")
    assert rec is not None
    assert rec.features == {"age": 41.0, "income": 150000.0, "craft": "weaver", "region": "north", "has_card": True}
    assert rec.label is True and rec.entities == {"artisan_id": "A1"} and rec.metadata == {"note": "first"}
    assert running.server.ctx.outcomes.get(model.id, "c2").features == {
        "age": 35.0,
        "craft": "potter",
        "has_card": False,
    }


def test_import_a_jsonl_file(running: Running, small_model: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "outcomes.jsonl"
    lines = [
        {"outcome_id": "j1", "features": {"age": 30, "craft": "carpenter"}, "label": "approved"},
        {
            "outcome_id": "j2",
            "features": {"age": 50.5, "craft": "potter", "has_card": False},
            "label": False,
            "occurred_at": "2025-01-02T03:04:05+00:00",
            "entities": {"scheme_id": "PMEGP"},
        },
        "not json",
    ]
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    code, out, _ = run(capsys, "import", str(path), "--model", small_model, "--target", running.target)
    assert code == 1
    assert "2 stored, 0 already there, 1 rejected" in out
    code, out, _ = run(capsys, "import", str(path), "--model", small_model, "--target", running.target)
    assert "0 stored, 2 already there" in out


def test_import_of_a_missing_file_or_model(running: Running, small_model: str, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "import", str(tmp_path / "nope.csv"), "--model", small_model, "--target", running.target)
    assert code == 2 and "no such file" in err
    path = tmp_path / "x.csv"
    path.write_text("age,label\n30,1\n")
    code, _, err = run(capsys, "import", str(path), "--model", "ghost", "--target", running.target)
    assert code == 1 and "NOT_FOUND" in err


def test_models_and_status(running: Running, small_model: str, capsys) -> None:
    code, out, _ = run(capsys, "models", "--target", running.target)
    assert code == 0 and out.startswith("small\t5 features")
    code, out, _ = run(capsys, "models", small_model, "--target", running.target)
    assert json.loads(out)["name"] == small_model
    running.client.record_outcome(small_model, {"age": 30.0, "craft": "potter"}, True)
    code, out, _ = run(capsys, "status", "--target", running.target, "--json")
    status = json.loads(out)
    assert status["models"][0]["model"] == small_model
    assert status["models"][0]["outcome_count"] == "1"  # int64 is a JSON string
    code, out, _ = run(capsys, "status", "--target", running.target)
    assert "small: serving version -, 1 outcomes" in out


def test_demo_creates_the_model_and_loads_outcomes_idempotently(running: Running, capsys) -> None:
    code, out, _ = run(capsys, "demo", "--target", running.target, "--outcomes", "300", "--json", "--no-train")
    first = json.loads(out)
    assert code == 0 and first["created_model"] and first["accepted"] == 300
    assert 0.85 <= first["expected_bayes_accuracy"] <= 0.92
    assert first["training"] == {}
    code, out, _ = run(capsys, "demo", "--target", running.target, "--outcomes", "300", "--json", "--no-train")
    again = json.loads(out)
    assert not again["created_model"] and (again["accepted"], again["duplicates"]) == (0, 300)


def test_demo_trains_and_compares_with_the_bayes_optimal_rule_on_the_same_rows(running: Running, capsys) -> None:
    code, out, _ = run(capsys, "demo", "--target", running.target, "--outcomes", "2000", "--json")
    t = json.loads(out)["training"]
    assert code == 0 and t["promoted"] and t["version"] == 1
    assert t["same_rows"] and t["validation_rows"] == 400
    assert t["family"].startswith("MODEL_FAMILY_")
    m = t["validation_metrics"]
    assert 0.7 < m["accuracy"] <= 1 and 0 <= m["calibration_error"] < 0.2
    assert t["accuracy_gap_pp"] == pytest.approx((t["bayes_optimal_accuracy"] - m["accuracy"]) * 100, abs=1e-3)
    code, out, _ = run(capsys, "demo", "--target", running.target, "--outcomes", "2000")
    assert "Bayes-optimal accuracy on the same 400 rows" in out


def test_health(running: Running, capsys) -> None:
    code, out, _ = run(capsys, "health", "--target", running.target)
    assert (code, out.strip()) == (0, "SERVING")


def test_config_prints_the_effective_configuration(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[training]\nincremental_every = 7\n")
    code, out, _ = run(capsys, "config", "--config", str(path))
    assert code == 0
    assert json.loads(out)["model_defaults"]["training"]["incremental_every"] == 7


def test_every_subcommand_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = [c for c in commands if f"sahayak-rpc {c}" not in readme]
    assert missing == []


def test_an_unreachable_server_is_a_clear_error(capsys) -> None:
    code, _, err = run(capsys, "status", "--target", "127.0.0.1:1")
    assert code == 1 and "UNAVAILABLE" in err


def test_backup_of_a_postgresql_database_points_to_its_own_tools(tmp_path: Path, capsys) -> None:
    code = cli.main(["backup", str(tmp_path / "copy.db"), "--db", "postgresql://sahayak@127.0.0.1:5432/sahayak"])
    assert code == 2 and "pg_dump" in capsys.readouterr().err
    assert not (tmp_path / "copy.db").exists()


def test_config_explain_prints_every_setting_with_its_source(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[training]\nincremental_every = 7\n")
    code, out, _ = run(capsys, "config", "--config", str(path), "--explain")
    assert code == 0
    assert f"[training] incremental_every = 7  (file {path})" in out
    assert "[server] port = " in out and "SAHAYAK_SERVER_PORT; --port" in out
    code, out, _ = run(capsys, "config", "--config", str(path), "--explain", "--json")
    rows = json.loads(out)
    assert {r["key"]: r["source"] for r in rows}["[training] incremental_every"] == f"file {path}"
    assert all(r["doc"] for r in rows)
