"""KB Explorer: explore a PostgreSQL + pgvector knowledge base from Python."""

from kb.bridge import SyncDatabase
from kb.collections import (
    CollectionInfo,
    create_collection,
    delete_collection,
    get_collection,
    list_collections,
)
from kb.config import Settings, get_settings, redact_url
from kb.database import Database, connect, get_db, session
from kb.db import create_engine, session_scope
from kb.errors import (
    CollectionNotFound,
    ConfigError,
    DatabaseBusy,
    DatabaseUnavailable,
    EmbedderMismatch,
    InvalidInput,
    KBError,
    NotFound,
    QueryTimeout,
    ReadOnlyError,
)
from kb.models import Collection, Document
from kb.status import DatabaseStatus, database_status

__all__ = [
    "Collection",
    "CollectionInfo",
    "CollectionNotFound",
    "ConfigError",
    "Database",
    "DatabaseBusy",
    "DatabaseStatus",
    "DatabaseUnavailable",
    "Document",
    "EmbedderMismatch",
    "InvalidInput",
    "KBError",
    "NotFound",
    "QueryTimeout",
    "ReadOnlyError",
    "Settings",
    "SyncDatabase",
    "connect",
    "create_collection",
    "create_engine",
    "database_status",
    "delete_collection",
    "get_collection",
    "get_db",
    "get_settings",
    "list_collections",
    "redact_url",
    "session",
    "session_scope",
]
