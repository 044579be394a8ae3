"""Tables as inspected, row identity, and the plan of what a rows migration will do.

The plan is computed once from both sides' inspections and is the single truth for the
dry run (which shows it), the run (which executes exactly it) and the verification
(which compares the target with what it promised: row count and an order-independent
digest of every row, per table).

Row identity, never rowid (two databases number their rows independently):

- ``pk``: the declared primary key;
- ``unique``: else the narrowest unique index over NOT NULL columns;
- ``row``: else the whole row, as a multiset: a row present k times on the source and
  j < k times on the target is copied k - j times; there are no conflicts then.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

IdentityKind = Literal["pk", "unique", "row"]
_MOD = 1 << 64
SAMPLE = 5
"""Keys named in results (the rest are counted)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """How rows of one table are told apart."""

    kind: IdentityKind
    columns: tuple[str, ...]

    def describe(self) -> str:
        """``pk(id)``, ``unique(email)`` or ``whole row``."""
        if self.kind == "row":
            return "whole row"
        return f"{self.kind}({','.join(self.columns)})"


@dataclass(frozen=True, slots=True)
class IdRange:
    """The ids a table has handed out (its ``INTEGER PRIMARY KEY``) and its sequence."""

    column: str
    low: int | None
    high: int | None
    seq: int | None
    """``sqlite_sequence`` for AUTOINCREMENT tables."""

    @property
    def next_id(self) -> int:
        """The id SQLite gives the next row: one above the highest ever (or present)."""
        return max(self.high or 0, self.seq or 0) + 1

    def describe(self) -> str:
        """``1-3`` (or ``empty``), with the next id."""
        span = "empty" if self.high is None else f"{self.low}-{self.high}"
        return f"{span}, next {self.next_id}"


@dataclass(frozen=True, slots=True)
class TableState:
    """One table as inspected: shape, identity, and every row's key and content hash.

    ``rows`` maps key -> content hash for keyed identities, and content hash -> how many
    times the row is present for the whole-row identity.
    """

    name: str
    columns: tuple[str, ...]
    identity: Identity
    sql: str
    rows: dict[str, Any]
    ids: IdRange | None = None
    max_rowid: int | None = None
    """None for WITHOUT ROWID tables."""

    @property
    def count(self) -> int:
        """Rows in the table."""
        if self.identity.kind == "row":
            return sum(int(n) for n in self.rows.values())
        return len(self.rows)

    def digest(self) -> str:
        """Order-independent digest of every row (see :func:`digest`)."""
        return digest(self.identity.kind, self.rows)


def checksum(hashes: Iterable[str]) -> str:
    """Order-independent checksum of row hashes: their sum modulo 2**64, in hex."""
    return f"{sum(int(h, 16) for h in hashes) % _MOD:016x}"


def digest(kind: IdentityKind, rows: dict[str, Any]) -> str:
    """A table's content digest: the sum of its row hashes (with multiplicity), mod 2**64.

    A sum does not depend on row order, so two tables with the same rows in any order (or
    rowids) have the same digest; the count is compared separately.
    """
    if kind == "row":
        total = sum(int(h, 16) * int(n) for h, n in rows.items())
    else:
        total = sum(int(h, 16) for h in rows.values())
    return f"{total % _MOD:016x}"


def state_from(name: str, meta: dict[str, Any]) -> TableState:
    """A TableState from the host-side inspection's JSON."""
    ident = meta["identity"]
    ids = meta.get("ids")
    return TableState(
        name=name,
        columns=tuple(meta["columns"]),
        identity=Identity(ident["kind"], tuple(ident["columns"])),
        sql=str(meta["sql"]),
        rows=dict(meta["rows"]),
        ids=IdRange(ids["column"], ids["min"], ids["max"], ids["seq"]) if ids else None,
        max_rowid=meta.get("max_rowid"),
    )


@dataclass(frozen=True, slots=True)
class TablePlan:
    """What the rows strategy will do to one table of one database pair, and promises."""

    item: str
    table: str
    identity: Identity
    source_count: int
    target_count: int
    insert: dict[str, int]
    """key -> how many copies to insert (more than 1 only for whole-row identity)."""
    update: tuple[str, ...]
    """Conflicting keys the run overwrites with the source's version (``--overwrite``)."""
    conflicts: tuple[str, ...]
    """Keys on both sides with different content."""
    only_on_target: int
    """Target rows the source lacks: kept by rows, dropped by a snapshot."""
    expected: dict[str, Any] = field(repr=False, compare=True)
    """The target table's rows as the plan promises them after the run."""
    warnings: tuple[str, ...] = ()
    replaced: dict[str, str] = field(default_factory=dict, repr=False)
    """The target's own content hash of each row to update (kept if the update fails)."""

    @property
    def missing(self) -> int:
        """Rows the target lacks (to be inserted)."""
        return sum(self.insert.values())

    @property
    def expected_count(self) -> int:
        if self.identity.kind == "row":
            return sum(int(n) for n in self.expected.values())
        return len(self.expected)

    def expected_digest(self) -> str:
        return digest(self.identity.kind, self.expected)

    def request(self) -> dict[str, Any]:
        """What the source must export: rows to insert (with counts) and to update."""
        return {"insert": self.insert, "update": list(self.update)}

    def allowing(self, refused: dict[str, str], vanished: Iterable[str]) -> dict[str, Any]:
        """The promised rows, less those the target refused (constraint) or lost meanwhile.

        ``refused`` maps key -> the content hash the source sent.
        """
        expected = dict(self.expected)
        for key, sent in refused.items():
            if self.identity.kind == "row":
                left = int(expected.get(key, 0)) - 1
                if left > 0:
                    expected[key] = left
                else:
                    expected.pop(key, None)
            elif key in self.replaced:
                expected[key] = self.replaced[key]  # a refused update kept the target's row
            elif expected.get(key) == sent:
                expected.pop(key, None)
        for key in vanished:
            expected.pop(key, None)
        return expected


def plan_table(
    item: str, source: TableState, target: TableState | None, *, overwrite: bool
) -> TablePlan:
    """Compare one table's two sides by the source's identity."""
    ident = source.identity
    theirs = target.rows if target is not None else {}
    if target is not None and target.identity != ident:
        # Different schemas: match by the source's identity only if the target's rows
        # are keyed the same way; otherwise fall back to whole rows on both sides.
        ident = Identity("row", source.columns)
        mine, theirs = _as_multiset(source), _as_multiset(target)
    else:
        mine = source.rows
    if ident.kind == "row":
        insert = {h: n - int(theirs.get(h, 0)) for h, n in mine.items() if n > theirs.get(h, 0)}
        only = sum(max(0, int(n) - int(mine.get(h, 0))) for h, n in theirs.items())
        expected = dict(theirs)
        for h, n in insert.items():
            expected[h] = int(expected.get(h, 0)) + n
        conflicts: tuple[str, ...] = ()
        update: tuple[str, ...] = ()
    else:
        insert = {k: 1 for k in mine if k not in theirs}
        conflicts = tuple(k for k, h in mine.items() if k in theirs and theirs[k] != h)
        only = sum(1 for k in theirs if k not in mine)
        update = conflicts if overwrite else ()
        expected = dict(theirs)
        for key in (*insert, *update):
            expected[key] = mine[key]
    warnings = _range_warnings(source, target, insert if ident.kind != "row" else {})
    return TablePlan(
        item=item,
        table=source.name,
        identity=ident,
        source_count=source.count,
        target_count=target.count if target is not None else 0,
        insert=insert,
        update=update,
        conflicts=conflicts,
        only_on_target=only,
        expected=expected,
        warnings=warnings,
        replaced={k: theirs[k] for k in update},
    )


def _as_multiset(state: TableState) -> dict[str, int]:
    if state.identity.kind == "row":
        return {h: int(n) for h, n in state.rows.items()}
    counts: dict[str, int] = {}
    for h in state.rows.values():
        counts[h] = counts.get(h, 0) + 1
    return counts


def _range_warnings(
    source: TableState, target: TableState | None, insert: dict[str, int]
) -> tuple[str, ...]:
    """Warn when copying moves the target's next id into the source's id range.

    SQLite hands out one above the highest id present (AUTOINCREMENT: ever present), so
    copying a row with a higher id moves the target's sequence there for good; from then
    on both colours hand out the same ids and every later migration conflicts. Resetting
    sqlite_sequence does not help: SQLite also looks at the highest id in the table.
    """
    src = source.ids
    if src is None or not insert:
        return ()
    dst = target.ids if target is not None else None
    copied = [_int_key(k) for k in insert]
    highest = max((c for c in copied if c is not None), default=None)
    if highest is None:
        return ()
    now_next = dst.next_id if dst is not None else 1
    after = max(now_next, highest + 1)
    if after == now_next:
        return ()
    target_span = dst.describe() if dst is not None else "empty, next 1"
    return (
        f"ids of {source.name}: target {target_span}; source {src.describe()}; copying "
        f"moves the target's next id to {after}, inside the source's range: both colours "
        "would then hand out the same ids (give each colour its own id range)",
    )


def _int_key(key: str) -> int | None:
    try:
        value = json.loads(key)
    except ValueError:
        return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], int):
        return int(value[0])
    return None
