"""The migration files on disk are well formed: paired, numbered without gaps, and reversible by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from whymail.db.migrate import MIGRATIONS_DIR, MigrationError, discover

_CREATE_TABLE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_DROP_TABLE = re.compile(r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(\w+)", re.IGNORECASE)


def test_every_up_file_has_a_down_file() -> None:
    ups = {p.name.removesuffix(".up.sql") for p in MIGRATIONS_DIR.glob("*.up.sql")}
    downs = {p.name.removesuffix(".down.sql") for p in MIGRATIONS_DIR.glob("*.down.sql")}
    assert ups, "no migrations found"
    assert ups == downs
    assert len(discover()) == len(ups)


def test_every_sql_file_is_an_up_or_down_file() -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        assert path.name.endswith((".up.sql", ".down.sql")), path.name


def test_versions_are_unique_and_contiguous_from_one() -> None:
    versions = [m.version for m in discover()]
    assert versions == list(range(1, len(versions) + 1))


def test_down_file_drops_every_table_its_up_file_creates() -> None:
    for migration in discover():
        created = set(_CREATE_TABLE.findall(migration.up.read_text(encoding="utf-8")))
        dropped = set(_DROP_TABLE.findall(migration.down.read_text(encoding="utf-8")))
        assert created == dropped, (
            f"{migration.down.name}: tables created but not dropped {created - dropped}"
        )


def test_discover_rejects_up_file_without_down_file(tmp_path: Path) -> None:
    (tmp_path / "001_core.up.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="no matching"):
        discover(tmp_path)


def test_discover_rejects_duplicate_versions(tmp_path: Path) -> None:
    for name in ("001_one", "001_two"):
        (tmp_path / f"{name}.up.sql").write_text("SELECT 1;")
        (tmp_path / f"{name}.down.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share a version"):
        discover(tmp_path)
