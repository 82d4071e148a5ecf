"""Fenced checkpoints on PostgreSQL: a commit that moves a partition's position applies only
if the position is still where the commit started from (compare-and-set in the commit's
own transaction).

Processors share the log's partitions through the log's consumer group, and a group may
give a partition to a new owner while the old one still commits a chunk of it. The
stores' checkpointed commits (resolve state, stage positions, segment stage) call
:func:`fence` first in their transaction:

* the rows of the partitions that have a position are locked (``SELECT ... ORDER BY part
  FOR UPDATE``: in partition order, so two fenced commits never deadlock on them) and
  compared with the positions the commit started from; a row changed by a commit that
  ended meanwhile is read as it is now (READ COMMITTED re-reads a row it waited for);
* a partition that had no position yet gets its new one inserted at once (``ON CONFLICT
  DO NOTHING``): a concurrent first commit of the same partition waits on the unique key
  and then finds the row there;
* any difference raises :class:`~patchbay.backends.records.CheckpointMoved` and the
  transaction rolls back: nothing of the commit is applied, so a chunk is applied once
  whichever processors believed they owned its partition.
"""

from __future__ import annotations

from psycopg import sql

from patchbay.backends.postgres.db import Connection
from patchbay.backends.records import Checkpoint, CheckpointMoved, LogPosition, Since


def fence(
    conn: Connection,
    where: str,
    table: str,
    since: Since | None,
    upto: Checkpoint,
    scope: tuple[str, str] | None = None,
) -> None:
    """Lock and check the positions of ``since``'s partitions in ``table`` (columns ``part``
    and ``seq``; with ``scope``, only the rows whose column ``scope[0]`` is ``scope[1]``);
    raise :class:`CheckpointMoved` (naming ``where``) if one moved. A partition that had no
    position gets its position in ``upto`` now. Nothing to do when ``since`` is ``None``."""
    if not since:
        return
    parts = sorted(since)
    name = sql.Identifier(table)
    scoped: sql.Composable = sql.SQL("")
    columns: sql.Composable = sql.SQL("part, seq")
    values: sql.Composable = sql.SQL("part, seq")
    if scope is not None:
        scoped = sql.SQL(" AND {} = {}").format(sql.Identifier(scope[0]), sql.Literal(scope[1]))
        columns = sql.SQL("{}, part, seq").format(sql.Identifier(scope[0]))
        values = sql.SQL("{}, part, seq").format(sql.Literal(scope[1]))
    rows = conn.execute(
        sql.SQL(
            "SELECT part, seq FROM {} WHERE part = ANY(%s::integer[]){} ORDER BY part FOR UPDATE"
        ).format(name, scoped),
        (parts,),
    ).fetchall()
    stored = {int(p): LogPosition(int(p), int(o)) for p, o in rows}
    gone = [p for p in parts if stored.get(p) != since[p]]
    first = [p for p in parts if p not in stored and since[p] is None and p in upto]
    if first and not gone:
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM unnest(%s::integer[], %s::bigint[])"
                " AS u (part, seq) ORDER BY part ON CONFLICT DO NOTHING RETURNING part"
            ).format(name, columns, values),
            (first, [upto[p].offset for p in first]),
        ).fetchall()
        gone = sorted(set(first) - {int(r[0]) for r in inserted})
    if gone:
        raise CheckpointMoved(where, gone)
