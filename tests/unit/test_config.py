"""Configuration: the seed's defaults, TOML, environment overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sahayak_rpc import config, fields


def test_defaults_are_the_seeds() -> None:
    cfg = config.load(env={})
    d = cfg.model_defaults
    assert d.training.retrain_interval_s == 7 * 86400
    assert d.training.incremental_every == 100
    assert d.training.validation_fraction == 0.2
    assert d.training.min_samples == 100
    assert (d.gate.min_accuracy, d.gate.min_f1, d.gate.max_calibration_error) == (0.75, 0.70, 0.20)
    lr = d.training.logistic_regression
    # l2 = 0: the strength is chosen on the data (training.L2_GRID, the seed's 0.1 among them).
    assert (lr.learning_rate, lr.l2, lr.tolerance, lr.max_iterations) == (0.01, 0.0, 0.001, 1000)
    assert (d.training.gradient_boosting.max_iterations, d.gate.max_roc_auc_drop, d.gate.min_log_loss_gain) == (
        2000,
        0.005,
        0.001,
    )
    assert d.monitoring.alert_cooldown_s == 3600
    assert cfg.health_check_interval_s == 300
    assert cfg.prediction_retention_s == 7 * 86400
    assert cfg.performance_retention_s == 30 * 86400
    assert (cfg.host, cfg.port, cfg.synchronous) == ("127.0.0.1", 50051, "full")


def test_toml_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "sahayak.toml"
    path.write_text(
        '[server]\nport = 6001\ndb = "x.db"\n'
        '[training]\nretrain_interval = "3d"\nincremental_every = 50\nfamilies = ["logistic_regression"]\n'
        "[gate]\nmin_accuracy = 0.8\n"
        '[monitoring]\nhealth_check_interval = "1m"\nalert_cooldown = "15m"\n'
    )
    cfg = config.load(path, env={"SAHAYAK_SERVER_PORT": "6002", "SAHAYAK_GATE_MIN_F1": "0.6"}, db="y.db")
    assert cfg.port == 6002
    assert cfg.db == "y.db"
    assert cfg.model_defaults.training.retrain_interval_s == 3 * 86400
    assert cfg.model_defaults.training.incremental_every == 50
    assert cfg.model_defaults.training.families == ("logistic_regression",)
    assert cfg.model_defaults.gate.min_accuracy == 0.8
    assert cfg.model_defaults.gate.min_f1 == 0.6
    assert cfg.health_check_interval_s == 60
    assert cfg.model_defaults.monitoring.alert_cooldown_s == 900


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        ("[server]\nprot = 1\n", {}, "unknown setting [server] prot"),
        ("[server]\nport = 'x'\n", {}, "[server] port"),
        ("[gate]\nmin_accuracy = 1.5\n", {}, "gate.min_accuracy"),
        ("[training]\nretrain_interval = 'soon'\n", {}, "duration"),
        ("[training]\nfamilies = ['svm']\n", {}, "training.families"),
        ("", {"SAHAYAK_SERVER_SYNCHRONOUS": "sometimes"}, "synchronous"),
        ("", {"SAHAYAK_TRAINING_SCHEDULE_ENABLED": "perhaps"}, "SAHAYAK_TRAINING_SCHEDULE_ENABLED"),
        ("port = 5\n", {}, "must be a [section]"),
        ("[server\n", {}, "sahayak.toml"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, env: dict, words: str) -> None:
    path = tmp_path / "sahayak.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path, env=env)
    assert words in str(info.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (45, 45), ("90s", 90), ("5m", 300), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("250ms", 0.25)],
)
def test_durations(text: object, seconds: float) -> None:
    assert config.parse_duration(text, "k") == seconds


# --- settings as documented fields ---------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_declared_once_with_a_usable_default() -> None:
    keys = [d.spec.key for d in config.SETTINGS if d.spec.key]
    assert len(keys) == len(set(keys)) and len({d.spec.env for d in config.SETTINGS if d.spec.key}) == len(keys)
    assert all(d.spec.doc and d.spec.allows(d.default) for d in config.SETTINGS)
    assert {d.spec.flag for d in config.SETTINGS if d.spec.flag} == {
        "--host",
        "--port",
        "--db",
        "--log-level",
        "--metrics-port",
        "--tokens-file",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--workers",
    }
    # Only the gradient-boosting parameters are set per model alone.
    assert {d.path for d in config.SETTINGS if not d.spec.key} == {
        f"model_defaults.training.gradient_boosting.{k}"
        for k in ("learning_rate", "max_iterations", "max_leaf_nodes", "l2")
    }


def test_each_key_reads_back_its_default_as_the_file_would_write_it() -> None:
    env = {d.spec.env: fields.show(d.default, d.spec.kind).strip('"') for d in config.SETTINGS if d.spec.key}
    assert config.load(env=env) == config.load(env={})


def test_the_readme_lists_every_setting_with_its_true_default() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config.settings_table() in readme, "run python scripts/settings_table.py"
    rows = [line for line in readme.splitlines() if line.startswith("| `[") or line.startswith("| `settings.")]
    for d in config.SETTINGS:
        name = d.spec.toml or f"settings.{d.path.removeprefix('model_defaults.')}"
        row = next((r for r in rows if r.startswith(f"| `{name}`")), None)
        assert row is not None, name
        assert row.split(" | ")[1] == f"`{fields.show(d.default, d.spec.kind)}`", name


def test_explain_says_where_each_value_came_from(tmp_path: Path) -> None:
    path = tmp_path / "sahayak.toml"
    path.write_text("[gate]\nmin_accuracy = 0.8\n[server]\nport = 6001\n")
    rows = {r["key"] or r["setting"]: r for r in config.explain(path, env={"SAHAYAK_SERVER_PORT": "6002"}, db="y.db")}
    assert len(rows) == len(config.SETTINGS)
    assert (rows["[server] port"]["value"], rows["[server] port"]["source"]) == (6002, "env SAHAYAK_SERVER_PORT")
    assert (rows["[gate] min_accuracy"]["value"], rows["[gate] min_accuracy"]["source"]) == (0.8, f"file {path}")
    assert rows["[gate] min_accuracy"]["scope"] == "model" and rows["[server] db"]["source"] == "flag"
    r = rows["[training] retrain_interval"]
    assert (r["value"], r["default"], r["source"], r["bounds"]) == (
        7 * 86400,
        7 * 86400,
        "default",
        "must be at least 60s",
    )
    assert "retrain" in r["doc"] and r["env"] == "SAHAYAK_TRAINING_RETRAIN_INTERVAL"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"SAHAYAK_SERVER_PORT": "70000"}, "[server] port: must be in [0, 65535]"),
        (
            {"SAHAYAK_TRAINING_LEARNING_RATE": "0"},
            "[training] learning_rate (config.training.logistic_regression.learning_rate): must be in (0, 10]",
        ),
        ({"SAHAYAK_SERVER_HEARTBEAT_INTERVAL": "10ms"}, "[server] heartbeat_interval: must be in [50ms, 60s]"),
        ({"SAHAYAK_SERVER_LOG_LEVEL": "loud"}, "[server] log_level: must be one of debug, info, warning, error"),
        ({"SAHAYAK_TRAINING_FAMILIES": "gradient_boosting,gradient_boosting"}, "duplicate family"),
    ],
)
def test_an_out_of_bounds_value_names_its_key(env: dict, words: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(env=env)
    assert words in str(info.value)
