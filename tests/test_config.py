"""Settings: defaults, URL validation and `.env` loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.config import Settings, get_settings, normalize_database_url, redact_url
from kb.errors import ConfigError


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "DATABASE_MAX_OVERFLOW",
        "DATABASE_POOL_TIMEOUT",
        "TEST_DATABASE_URL",
        "KB_DATA_DIR",
        "KB_READ_ONLY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_env: Path) -> None:
    s = get_settings()
    assert (s.database_pool_size, s.database_max_overflow, s.database_pool_timeout) == (10, 20, 30)
    assert s.database_url is None
    assert s.uses_embedded_server
    assert s.data_dir == Path("~/.kb-explorer").expanduser()


def test_environment_names_match_existing_apps(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:secret@db.example:5433/kb")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("DATABASE_MAX_OVERFLOW", "4")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "5.5")
    monkeypatch.setenv("TEST_DATABASE_URL", "postgresql://u@localhost/kb_test")
    monkeypatch.setenv("KB_DATA_DIR", str(clean_env / "data"))
    s = get_settings()
    assert s.database_url == "postgresql+asyncpg://u:secret@db.example:5433/kb"
    assert (s.database_pool_size, s.database_max_overflow, s.database_pool_timeout) == (3, 4, 5.5)
    assert s.test_database_url == "postgresql+asyncpg://u@localhost/kb_test"
    assert s.data_dir == clean_env / "data"
    assert not s.uses_embedded_server


def test_dotenv_file_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        "DATABASE_URL=postgresql+asyncpg://app:pw@10.0.0.1/app\n"
        "DATABASE_POOL_SIZE=7\nKB_READ_ONLY=1\n"
    )
    s = get_settings()
    assert s.database_url == "postgresql+asyncpg://app:pw@10.0.0.1/app"
    assert s.database_pool_size == 7
    assert s.read_only is True


def test_environment_beats_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("DATABASE_POOL_SIZE=7\n")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "2")
    assert get_settings().database_pool_size == 2


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql+asyncpg://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgresql://u:p@h/d", "postgresql+asyncpg://u:p@h/d"),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("  postgresql://u@h/d \n", "postgresql+asyncpg://u@h/d"),
    ],
)
def test_url_normalisation(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(
    "bad",
    ["mysql://u@h/d", "postgresql+psycopg://u@h/d", "sqlite:///x.db", "not a url", "http://x"],
)
def test_other_schemes_are_refused_with_what_is_accepted(clean_env: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"postgresql\+asyncpg://"):
        get_settings(database_url=bad)


@pytest.mark.parametrize("field", ["database_pool_size", "database_pool_timeout"])
def test_bad_numbers_are_refused(clean_env: Path, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        get_settings(**{field: 0})


def test_empty_url_means_embedded(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    assert get_settings().uses_embedded_server


def test_redact_url_hides_password() -> None:
    shown = redact_url("postgresql+asyncpg://user:hunter2@host/db")
    assert "hunter2" not in shown
    assert "user" in shown and "host/db" in shown


def test_settings_are_immutable(clean_env: Path) -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.database_pool_size = 3  # type: ignore[misc]
