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


def test_unset_variable_error_names_the_key_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("relay:\n  allowed_networks: [10.0.0.0/8, '${NETS}']\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: relay.allowed_networks.1: ${{NETS}}: environment variable is not set")
    assert "\n" not in message


def test_variable_values_are_not_read_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "db:\n  dsn: postgresql://mail:${DB_PASSWORD}@db/mail\n"
        "relay:\n  password: ${DB_PASSWORD}\n"
        "server:\n  hostname: ${HOST}\n"
    )
    host = "mx.test\nredis:\n  addr: evil.test:6379"
    config = load_config(path, env={"DB_PASSWORD": "pa55 #word", "HOST": host})
    assert config.db.dsn == "postgresql://mail:pa55 #word@db/mail"
    assert config.relay.password == "pa55 #word"
    # A newline in a value stays in that value; it does not inject keys.
    assert config.server.hostname == host
    assert config.redis.addr == ""


def test_variables_in_comments_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# set ${UNSET} in production\nserver:\n  hostname: mx.test  # or ${ALSO_UNSET}\n")
    assert load_config(path, env={}).server.hostname == "mx.test"


def test_expanded_values_are_still_coerced_to_the_field_type(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  smtp:\n    port: ${PORT:-2526}\nstorage:\n  fsync: ${FSYNC:-false}\n")
    config = load_config(path, env={})
    assert config.server.smtp.port == 2526
    assert config.storage.fsync is False


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("WHYMAIL__REDIS__PASSWORD", "123456", ("redis", "password"), "123456"),
        ("WHYMAIL__SERVER__HOSTNAME", "on", ("server", "hostname"), "on"),
        ("WHYMAIL__RELAY__PASSWORD", "pa55 #word: x", ("relay", "password"), "pa55 #word: x"),
        ("WHYMAIL__REDIS__PASSWORD", "", ("redis", "password"), ""),
        ("WHYMAIL__LOCAL_DOMAINS", "[a.test, b.test]", ("local_domains",), ["a.test", "b.test"]),
        ("WHYMAIL__SERVER__SMTP__PORT", "2526", ("server", "smtp", "port"), 2526),
        ("WHYMAIL__STORAGE__FSYNC", "off", ("storage", "fsync"), False),
        ("WHYMAIL__AUTH__ALLOW_INSECURE_AUTH", "true", ("auth", "allow_insecure_auth"), True),
    ],
)
def test_generic_override_values_are_strings_unless_lists_or_maps(
    name: str, value: str, attribute: tuple[str, ...], expected: object
) -> None:
    node: object = load_config(None, env={name: value})
    for part in attribute:
        node = getattr(node, part)
    assert node == expected
    assert type(node) is type(expected)


def test_generic_override_with_broken_list_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^WHYMAIL__LOCAL_DOMAINS: invalid YAML list or mapping$"):
        load_config(None, env={"WHYMAIL__LOCAL_DOMAINS": "[a.test, "})


def test_min_pool_above_max_pool_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("db:\n  min_pool: 20\n  max_pool: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: db: ")
    assert "min_pool (20) must not exceed max_pool (10)" in message
    with pytest.raises(ConfigError, match=r"db: .*min_pool \(11\) must not exceed max_pool \(10\)"):
        load_config(None, env={"WHYMAIL__DB__MIN_POOL": "11"})
    config = load_config(None, env={"WHYMAIL__DB__MIN_POOL": "10"})
    assert config.db.min_pool == config.db.max_pool == 10


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
