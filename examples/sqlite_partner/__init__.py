"""A Firehose partner that records what it receives in a local SQLite file (see README.md)."""

from examples.sqlite_partner.partner import SqlitePartner

__all__ = ["SqlitePartner"]
