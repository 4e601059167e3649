"""Settings, read from the environment and a `.env` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from kb.errors import ConfigError

ACCEPTED_SCHEMES = ("postgresql+asyncpg://", "postgresql://", "postgres://")


def normalize_database_url(value: str) -> str:
    """Return `value` as a postgresql+asyncpg URL, or raise ConfigError saying what is accepted."""
    raw = value.strip()
    if not raw:
        raise ConfigError("DATABASE_URL is empty; unset it to use the embedded server.")
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(
            f"DATABASE_URL is not a database URL ({exc}); expected e.g. "
            "postgresql+asyncpg://user:password@host:5432/dbname"
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    if url.drivername != "postgresql+asyncpg":
        raise ConfigError(
            f"DATABASE_URL uses the scheme {url.drivername!r}; kb accepts "
            "postgresql+asyncpg://... (or postgresql://..., which is taken as asyncpg)."
        )
    return url.render_as_string(hide_password=False)


def redact_url(url: str | URL) -> str:
    """Return the URL as text with any password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


class Settings(BaseSettings):
    """Everything kb can be configured with; see `.env.example` for each setting."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_prefix="KB_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # Names shared with the apps our users come from: no KB_ prefix.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    database_pool_size: int = Field(
        default=10, ge=1, validation_alias=AliasChoices("DATABASE_POOL_SIZE", "database_pool_size")
    )
    database_max_overflow: int = Field(
        default=20,
        ge=0,
        validation_alias=AliasChoices("DATABASE_MAX_OVERFLOW", "database_max_overflow"),
    )
    database_pool_timeout: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("DATABASE_POOL_TIMEOUT", "database_pool_timeout"),
    )
    test_database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TEST_DATABASE_URL", "test_database_url")
    )

    # kb's own settings, read as KB_<NAME>.
    data_dir: Path = Path("~/.kb-explorer")
    embedded_database: str = "kb"
    startup_timeout: float = Field(default=60.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    statement_timeout: float = Field(default=60.0, ge=0)
    echo_sql: bool = False
    read_only: bool = False
    embedder: str = "local"
    local_model: str = "all-MiniLM-L6-v2"
    # auto (bfloat16 where the CPU has native bf16 matrix products, else float32), bf16, fp32.
    local_precision: str = "auto"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str | None = None
    openai_model: str = "text-embedding-3-small"
    max_upload_mb: float = Field(default=50.0, gt=0)
    ingest_roots: str = ""
    # maintenance_work_mem for HNSW builds ("2GB", "512MB"); empty: a quarter of the memory
    # (1-8 GB) on the embedded server, 1GB on another server.
    index_build_memory: str = Field(default="", pattern=r"^(|\d+ ?(kB|MB|GB|TB))$")

    @field_validator("database_url", "test_database_url", mode="before")
    @classmethod
    def _normalize_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            return value
        return normalize_database_url(value)

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def uses_embedded_server(self) -> bool:
        """Tell whether kb starts its own PostgreSQL (no DATABASE_URL set)."""
        return self.database_url is None

    @property
    def pgdata(self) -> Path:
        """Return the embedded server's data directory."""
        return self.data_dir / "pgdata"


def get_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and `.env`, with keyword overrides on top."""
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
