"""Configuration loading: defaults, ${VAR:-default} expansion, environment overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.config import ConfigError, example_yaml, expand_vars, load_config, resolve_state_dir

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_dev_setup() -> None:
    config = load_config(None, env={})
    assert config.server.smtp.port == 2525
    assert config.server.imap.port == 1143
    assert config.server.http.port == 8080
    assert config.local_domains == ["localhost"]
    assert config.db.dsn == "" and config.redis.addr == ""


def test_example_file_is_valid_and_up_to_date() -> None:
    text = (ROOT / "config.example.yaml").read_text()
    assert text == example_yaml(), "regenerate config.example.yaml from whymail.config.example_yaml()"
    assert load_config(ROOT / "config.example.yaml", env={}).server.smtp.max_recipients == 100


def test_variables_expand_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("db:\n  dsn: ${DSN:-postgresql://x/y}\nserver:\n  hostname: ${HOST}\n")
    config = load_config(path, env={"HOST": "mx.example.com"})
    assert config.db.dsn == "postgresql://x/y"
    assert config.server.hostname == "mx.example.com"


def test_unset_variable_without_default_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  hostname: ${NOPE}\n")
    with pytest.raises(ConfigError, match=r"\$\{NOPE\}: environment variable is not set"):
        load_config(path, env={})


def test_named_and_generic_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("db:\n  dsn: postgresql://file/db\nserver:\n  smtp:\n    port: 25\n")
    config = load_config(
        path,
        env={"WHYMAIL_DB_DSN": "postgresql://env/db", "REDIS_ADDR": "127.0.0.1:6379",
             "WHYMAIL__SERVER__SMTP__PORT": "2526", "WHYMAIL__LOCAL_DOMAINS": "[a.test, B.test]"},
    )
    assert config.db.dsn == "postgresql://env/db"
    assert config.redis.addr == "127.0.0.1:6379"
    assert config.server.smtp.port == 2526
    assert config.local_domains == ["a.test", "b.test"]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("server:\n  smtp:\n    prot: 25\n", "server.smtp.prot: unknown key"),
        ("server:\n  smtp:\n    port: 70000\n", "server.smtp.port: Input should be less than or equal to 65535"),
        ("ray:\n  shards: zero\n", "ray.shards: Input should be a valid integer"),
        ("logging:\n  level: LOUD\n", "logging.level: Value error, must be one of"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("server: [\n", "invalid YAML at line"),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_state_dir_resolution_order(tmp_path: Path) -> None:
    config = load_config(None, env={})
    assert resolve_state_dir(str(tmp_path / "cli"), config, env={"WHYMAIL_STATE_DIR": "/x"}) == tmp_path / "cli"
    assert resolve_state_dir(None, config, env={"WHYMAIL_STATE_DIR": str(tmp_path / "env")}) == tmp_path / "env"
    config.state_dir = str(tmp_path / "cfg")
    assert resolve_state_dir(None, config, env={}) == tmp_path / "cfg"
    assert resolve_state_dir(None, None, env={}).name == "whymail"


@given(st.text(max_size=200))
def test_expand_vars_never_raises_anything_but_config_error(text: str) -> None:
    try:
        result = expand_vars(text, {"A": "1"})
    except ConfigError:
        return
    assert "${A}" not in result
