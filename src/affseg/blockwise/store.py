"""The graph store: region-graph statistics, lookup tables and block-done records in a database.

One interface, :class:`GraphStore`, opened by :func:`open_store`, with two back ends:

- **SQLite** (default): a filesystem path (or ``sqlite:///path``, SQLAlchemy's spelling:
  ``sqlite:///rel.db`` is relative, ``sqlite:////abs/path.db`` absolute) names one file, usually
  beside the output (:func:`default_store_path`). Nothing to start. It runs in WAL mode with
  ``synchronous=FULL`` (a committed block survives a power cut) and a busy timeout, so several
  worker processes of one machine can write; writers take turns (one short transaction per block).
  WAL needs a local filesystem: on NFS or a cluster use PostgreSQL.
- **PostgreSQL**: ``postgresql://user:password@host:port/database`` through psycopg 3 (the
  optional extra ``affseg[postgresql]``), for many writers on a cluster. The tables live in the
  connection's current schema (``?options=-csearch_path%3Dmyschema`` picks another one), which
  must hold nothing else.

What is stored (every row belongs to a *stage*, e.g. ``"region_graph"``):

- **block graphs** ``(stage, block, part, nodes, edges, node_ids, node_sizes, u, v, count, sum,
  max, min, histogram_counts, histogram)``: each block's
  :class:`~affseg.graph.mala.statistics.EdgeStatistics` as written by
  :meth:`GraphStore.write_block`, as arrays in blobs (one row per block, more where its edges
  pass :data:`BLOCK_GRAPH_BYTES`); :meth:`GraphStore.read_statistics` merges them over the blocks
  exactly as :func:`~affseg.graph.mala.statistics.merge_edge_statistics` does (sizes, counts,
  sums and histograms add up, max of maxima, min of minima; bitwise equal, also the float sums,
  since the blocks are merged in block order). Stores of schema version 1 and 2 kept a row per
  node and per edge (**nodes** ``(stage, block, id, size)``, **edges** ``(stage, block, u, v,
  count, sum, max, min, histogram)``); those rows are still read, and a block written again
  replaces them.
- **fragments** ``(stage, block, id, size, z, y, x)``: the node table of a fragments stage, each
  fragment's voxel count and centre (the mean of its voxels' indices in the whole volume, zyx;
  ``z`` is NULL in 2D), by :meth:`GraphStore.write_fragments` and
  :meth:`GraphStore.read_fragments`.
- **lookup tables** ``(name, old, new)``: fragment id -> segment id, one per name (e.g. per
  threshold), by :meth:`GraphStore.write_lookup` and :meth:`GraphStore.read_lookup`.
- **done records** ``(stage, block)`` and one **identity** per stage (JSON: the layout and the
  parameters, see :func:`stage_identity`), set by :meth:`GraphStore.begin_stage`, which refuses
  another identity (:class:`~affseg.errors.OutputExists`) unless ``overwrite=True``.
- **meta** ``(key, value)``: the schema's name and version; a database with other tables, or
  another version, is refused (:class:`~affseg.errors.CorruptInput`) before any work, except a
  store of an older version, which is brought to the current one when opened (the tables added
  since: fragments in version 2, block graphs in version 3).

Storage decisions:

- **uint64 ids** (fragment ids, edge ends, lookup entries) are stored in signed 64-bit SQL
  integers by *reinterpreting their bits* (two's complement, ``ids.view(np.int64)``): ids below
  2**63 are stored as themselves, 2**63 .. 2**64 - 1 as -2**63 .. -1; lossless both ways
  (:func:`uint64_to_sql`, :func:`sql_to_uint64`). SQL ordering of those columns is therefore not
  uint64 ordering beyond 2**63: nothing here relies on it (merging and sorting happen in numpy
  after the conversion back).
- **block graph arrays** are the little-endian bytes of their values: ids, sizes, ``u``, ``v``
  and counts int64 (ids with the bits of their uint64, as above), sums float64, max and min
  float32. A blob whose length does not fit its row's counts is a damaged store
  (:class:`~affseg.errors.CorruptInput`).
- **histograms** (256 bins of uint32 per edge) are stored sparsely: the non-zero bins only, in
  increasing bin order, as packed little-endian records ``(bin: uint8, count: uint32)`` of 5
  bytes, one edge after the other, with the number of records of each edge in
  ``histogram_counts`` (uint16); NULL means the block was written without histograms, and then
  the merged statistics have none. (The edge rows of version 1 and 2 stores hold one edge's
  records each, and their max and min as double precision.)
- **Atomic, idempotent block writes**: one transaction per block replaces that block's rows of
  the stage (delete, then insert) and marks it done, so a block written twice (a worker retried
  after a crash) counts once, and a block is done exactly when its statistics are committed.
  Concurrent writers of one block are serialised on the block's row in ``affseg_parts``.

A :class:`GraphStore` pickles as its URL (and the stage identities it began), so it can be sent
to worker processes, which reopen it; it also reconnects by itself after a ``fork``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .._checks import as_flag, as_int, describe
from ..errors import AffsegError, CorruptInput, InputError, OutputExists, PathNotFound
from ..graph.mala.statistics import HISTOGRAM_BINS, EdgeStatistics, empty_edge_statistics

__all__ = [
    "SCHEMA_VERSION",
    "GraphStore",
    "default_store_path",
    "open_store",
    "sql_to_uint64",
    "stage_identity",
    "uint64_to_sql",
]

SCHEMA_NAME = "affseg graph store"
SCHEMA_VERSION = 3  # 2: the fragments table; 3: block graphs as arrays (older stores are brought up to it)
CONNECT_TIMEOUT_S = 5  # PostgreSQL: seconds to wait for the server before refusing the URL
BUSY_TIMEOUT_MS = 120_000  # SQLite: how long a writer waits for another one
MAX_BLOCK_ID = 2**63 - 1
FETCH_ROWS = 50_000  # rows converted to arrays at a time when reading
_HIST_RECORD = np.dtype([("bin", "u1"), ("count", "<u4")])  # packed: 5 bytes
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
BLOCK_GRAPH_BYTES = 2**28  # about the most bytes of node or of edge arrays in one row of affseg_block_graphs
BLOCK_GRAPH_ROWS = 8  # rows of affseg_block_graphs fetched at a time when reading
_TABLES = ("affseg_meta", "affseg_stages", "affseg_done", "affseg_parts", "affseg_nodes", "affseg_edges",
           "affseg_lookups", "affseg_lookup_entries", "affseg_fragments", "affseg_block_graphs")
_ADDED = {2: ("affseg_fragments",), 3: ("affseg_block_graphs",)}  # the tables each schema version added
# the arrays of a block graph row: (column, dtype), little-endian; "edges" ones have one value per edge
_NODE_ARRAYS = (("node_ids", "<i8"), ("node_sizes", "<i8"))
_EDGE_ARRAYS = (("u", "<i8"), ("v", "<i8"), ("count", "<i8"), ("sum", "<f8"), ("max", "<f4"), ("min", "<f4"))
_HIST_COUNTS = "<u2"  # records per edge in the histogram blob (at most 256)


# ---------------------------------------------------------------------------------------------
# ids


def uint64_to_sql(ids) -> np.ndarray:
    """uint64 ids as the int64 values stored in SQL: the same 64 bits, reinterpreted (lossless)."""
    return np.ascontiguousarray(ids, dtype=np.uint64).view(np.int64)


def sql_to_uint64(values) -> np.ndarray:
    """The inverse of :func:`uint64_to_sql`: stored int64 values back to uint64 ids."""
    return np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)


def _as_ids(values, *, name: str, ndim: int = 1) -> np.ndarray:
    """Integer ids in [0, 2**64) as uint64, or an InputError naming ``name``."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise InputError(f"{name} must be an array of integer ids, got {describe(values)}") from None
    if array.dtype.kind not in "iu" or array.ndim != ndim:
        raise InputError(f"{name} must be a {ndim}-D array of integer ids in [0, 2**64), got "
                         f"{array.dtype} of shape {array.shape}")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise InputError(f"{name} must not hold negative ids, got {int(array.min())}")
    return array.astype(np.uint64, copy=False)


def _as_column(values, dtype, *, name: str, length: int) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (length,):
        raise InputError(f"{name} must have shape ({length},) like the edges, got {array.shape}")
    return array.astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# identities


def stage_identity(layout=None, **parameters) -> dict:
    """The identity of a stage's run, to give :meth:`GraphStore.begin_stage`.

    Parameters
    ----------
    layout : BlockLayout, optional
        The block layout (its description and digest are stored).
    **parameters
        Everything else the stage's outputs depend on (method options, thresholds, the input's
        identity): JSON-serialisable values (numbers, strings, lists, dicts, numpy scalars and
        arrays).

    Returns
    -------
    identity : dict
        ``{"layout": ..., "layout_digest": ..., "parameters": {...}}``.
    """
    identity: dict[str, Any] = {"parameters": dict(parameters)}
    if layout is not None:
        identity["layout"] = layout.describe()
        identity["layout_digest"] = layout.digest()
    return identity


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} {describe(value, 80)} is not JSON-serialisable")


def _canonical(identity) -> str:
    if not isinstance(identity, Mapping):
        raise InputError(f"a stage identity must be a dict (see stage_identity), got {describe(identity)}")
    try:
        return json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_plain)
    except (TypeError, ValueError) as error:
        raise InputError(f"a stage identity must be plain JSON data: {error}") from None


def _flatten(value, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix or "(identity)": value}


def _differences(stored: str, new: str, limit: int = 4) -> str:
    old_items, new_items = _flatten(json.loads(stored)), _flatten(json.loads(new))
    keys = sorted(set(old_items) | set(new_items))
    missing = object()
    lines = []
    for key in keys:
        a, b = old_items.get(key, missing), new_items.get(key, missing)
        if a != b:
            show = [("absent" if x is missing else describe(x, 80)) for x in (a, b)]
            lines.append(f"{key}: stored {show[0]}, now {show[1]}")
    more = f"; and {len(lines) - limit} more" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def _check_stage_name(stage) -> str:
    if not isinstance(stage, str) or not _STAGE_NAME.match(stage):
        raise InputError(f"a stage or lookup-table name must be 1-200 characters of letters, digits and _ . : -, "
                         f"got {describe(stage)}")
    return stage


# ---------------------------------------------------------------------------------------------
# URLs


def _redact(url: str) -> str:
    """The URL without its password (for messages)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rsplit("@", 1)[1]
            netloc = f"{user}:***@{host}"
        query = re.sub(r"(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return re.sub(r"//[^@/]*@", "//***@", url)


def default_store_path(output) -> Path:
    """The SQLite store beside an output (``out.zarr`` -> ``out.zarr.graph.sqlite``)."""
    output = Path(os.fspath(output))
    return output.with_name(output.name + ".graph.sqlite")


def open_store(url_or_path, *, create: bool = False) -> GraphStore:
    """Open (or with ``create``, create if absent) a graph store, checking it before any work.

    Parameters
    ----------
    url_or_path : str or os.PathLike
        A filesystem path or ``sqlite:///path`` (SQLite), or ``postgresql://...`` (PostgreSQL).
    create : bool
        Create the store where there is none (a new SQLite file, or the tables in an empty
        PostgreSQL database); an existing store is opened as it is.

    Returns
    -------
    store : GraphStore

    Raises
    ------
    InputError
        For a URL of another kind, a malformed or unreachable PostgreSQL URL (connect timeout
        5 s), or psycopg missing.
    PathNotFound
        If there is no store there and ``create`` is false.
    CorruptInput
        For a file that is not SQLite, or a database holding other tables or another schema version.
    """
    create = as_flag(create, name="create")
    if isinstance(url_or_path, os.PathLike):
        url_or_path = os.fspath(url_or_path)
    if not isinstance(url_or_path, str) or not url_or_path:
        raise InputError(f"a graph store is a path or a URL (sqlite:///path, postgresql://...), "
                         f"got {describe(url_or_path)}")
    text = url_or_path
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        backend: _Backend = _Postgres(text)
    elif scheme == "sqlite":
        path = text[len("sqlite:///"):] if text.lower().startswith("sqlite:///") else ""
        if not path:
            raise InputError(f"a SQLite store URL is sqlite:///relative/path or sqlite:////absolute/path, got {text!r}")
        backend = _SQLite(Path(path))
    elif scheme:
        raise InputError(f"unsupported graph store URL {_redact(text)!r}: use a path, sqlite:///path or "
                         "postgresql://user@host/database")
    else:
        backend = _SQLite(Path(text))
    store = GraphStore(backend)
    try:
        store._open(create)
    except BaseException:
        store.close()
        raise
    return store


def _reopen(url: str, stages: dict[str, str]) -> GraphStore:
    store = open_store(url)
    store._stages.update(stages)
    return store


# ---------------------------------------------------------------------------------------------
# back ends

_OPEN_STORES: weakref.WeakSet = weakref.WeakSet()
_ORPHANS: list = []  # connections inherited through fork


def _after_fork_in_child() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Backend:
    """What differs between SQLite and PostgreSQL: connecting, transactions, bulk inserts, DDL."""

    kind = ""
    conn: Any = None
    blob = "BLOB"
    table_suffix = ""
    lock_clause = ""  # appended to a SELECT of a row that concurrent writers only read
    lock_update = ""  # appended to a SELECT of a row about to be changed
    elsewhere = ""  # where to put a store instead of a database holding other tables
    url = ""

    def connect(self, create: bool):
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def transaction(self, write: bool):
        raise NotImplementedError

    def sql(self, statement: str) -> str:
        return statement

    def insert_many(self, cur, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
        raise NotImplementedError

    def stream(self, cur, statement: str, params: tuple, rows: int = FETCH_ROWS) -> Iterator[list[tuple]]:
        """The rows of a SELECT, in lists of at most ``rows``."""
        raise NotImplementedError

    def tables(self, cur) -> set[str]:
        raise NotImplementedError

    def before_create(self, cur) -> None:
        """Serialise concurrent creators of one store."""

    def describe(self) -> str:
        raise NotImplementedError

    def detach(self) -> None:
        """In a forked child: forget the parent's connection without closing it (closing a
        PostgreSQL one there would end the parent's session; psycopg's and sqlite3's finalisers
        leave it alone in another process)."""
        if self.conn is not None:
            _ORPHANS.append(self.conn)  # never used again
        self.conn = None


class _SQLite(_Backend):
    kind = "SQLite"
    elsewhere = "give the store a file of its own"
    table_suffix = " WITHOUT ROWID"

    def __init__(self, path: Path):
        self.path = Path(path).expanduser().absolute()
        self.url = str(self.path)
        self.conn: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"SQLite graph store {self.path}"

    def connect(self, create: bool):
        path = self.path
        if path.is_dir():
            raise InputError(f"the graph store {path} is a folder, not a SQLite file")
        if not path.exists():
            if not create:
                raise PathNotFound(f"no graph store at {path} (a SQLite file is created by the first stage)")
            if not path.parent.is_dir():
                raise PathNotFound(f"the folder of the graph store {path} does not exist")
        uri = path.as_uri() + ("?mode=rwc" if create else "?mode=rw")
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as error:
            raise InputError(f"cannot open the SQLite graph store {path}: {error}") from None
        self.conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")  # per connection; changes nothing in the file
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header
        except sqlite3.DatabaseError as error:
            raise CorruptInput(f"the graph store {path} is not a SQLite database ({error})") from None

    def set_modes(self) -> None:
        """WAL (several processes write) and synchronous=FULL (commits survive power loss)."""
        assert self.conn is not None
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise InputError(f"the SQLite graph store {self.path} cannot use write-ahead logging (journal mode "
                             f"{mode}): put it on a local filesystem, or use PostgreSQL")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None

    @contextlib.contextmanager
    def transaction(self, write: bool):
        conn = self.conn
        assert conn is not None
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield cur
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    def insert_many(self, cur, table, columns, rows) -> None:
        marks = ", ".join("?" * len(columns))
        cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def stream(self, cur, statement, params, rows=FETCH_ROWS):
        cur.execute(statement, params)
        while fetched := cur.fetchmany(rows):
            yield fetched

    def tables(self, cur) -> set[str]:
        rows = cur.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                           "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").fetchall()
        return {name for (name,) in rows}


class _Postgres(_Backend):
    kind = "PostgreSQL"
    elsewhere = ("give the store a database of its own, or a schema of its own in this one "
                 "(add ?options=-csearch_path%3Dmyschema to the URL after CREATE SCHEMA myschema)")
    blob = "BYTEA"
    lock_clause = " FOR SHARE"
    lock_update = " FOR UPDATE"

    def __init__(self, url: str):
        self.url = url
        self.conn = None

    def describe(self) -> str:
        return f"PostgreSQL graph store {_redact(self.url)}"

    def connect(self, create: bool):
        shown = _redact(self.url)
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise InputError(f"the graph store {shown} needs psycopg 3 for PostgreSQL, which is not installed: "
                             "pip install 'affseg[postgresql]'") from None
        try:
            params = conninfo_to_dict(self.url)
        except psycopg.Error as error:
            raise InputError(f"malformed PostgreSQL URL {shown}: {error}") from None
        extra: dict[str, Any] = {}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in params:
            extra["application_name"] = "affseg"
        try:
            self.conn = psycopg.connect(self.url, autocommit=True, **extra)
        except psycopg.Error as error:
            reason = " ".join(str(error).split())
            raise InputError(f"cannot connect to the PostgreSQL graph store {shown}: {reason}") from None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


    @contextlib.contextmanager
    def transaction(self, write: bool):
        conn = self.conn
        assert conn is not None
        with conn.transaction(), conn.cursor() as cur:
            if not write:  # one snapshot for all the reads
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cur

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def stream(self, cur, statement, params, rows=FETCH_ROWS):
        assert self.conn is not None
        # rows come as they are fetched; in binary, so that blobs are not sent as hex text
        with self.conn.cursor(name="affseg_stream", binary=True) as server_side:
            server_side.execute(self.sql(statement), params)
            while fetched := server_side.fetchmany(rows):
                yield fetched

    def insert_many(self, cur, table, columns, rows) -> None:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def tables(self, cur) -> set[str]:
        cur.execute("SELECT current_schema()")
        (schema,) = cur.fetchone()
        if schema is None:
            raise InputError(f"the PostgreSQL graph store {_redact(self.url)} has no current schema "
                             "(its search_path names no existing schema)")
        cur.execute("SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                    "AND c.relkind IN ('r', 'v', 'm', 'p', 'f')")
        return {name for (name,) in cur.fetchall()}

    def before_create(self, cur) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('affseg graph store'))")


def _ddl(backend: _Backend) -> list[str]:
    b, s = backend.blob, backend.table_suffix
    return [
        "CREATE TABLE affseg_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE affseg_stages (stage TEXT PRIMARY KEY, identity TEXT NOT NULL, digest TEXT NOT NULL)",
        f"CREATE TABLE affseg_done (stage TEXT NOT NULL, block BIGINT NOT NULL, PRIMARY KEY (stage, block)){s}",
        "CREATE TABLE affseg_parts (stage TEXT NOT NULL, block BIGINT NOT NULL, histogram INTEGER NOT NULL, "
        f"nodes BIGINT NOT NULL, edges BIGINT NOT NULL, PRIMARY KEY (stage, block)){s}",
        "CREATE TABLE affseg_nodes (stage TEXT NOT NULL, block BIGINT NOT NULL, id BIGINT NOT NULL, "
        f"size BIGINT NOT NULL, PRIMARY KEY (stage, block, id)){s}",
        "CREATE TABLE affseg_edges (stage TEXT NOT NULL, block BIGINT NOT NULL, u BIGINT NOT NULL, "
        "v BIGINT NOT NULL, count BIGINT NOT NULL, sum DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL, "
        f"min DOUBLE PRECISION NOT NULL, histogram {b}, PRIMARY KEY (stage, block, u, v)){s}",
        "CREATE TABLE affseg_lookups (name TEXT PRIMARY KEY, stage TEXT NOT NULL, size BIGINT NOT NULL)",
        "CREATE TABLE affseg_lookup_entries (name TEXT NOT NULL, old BIGINT NOT NULL, new BIGINT NOT NULL, "
        f"PRIMARY KEY (name, old)){s}",
        *(statement for version in sorted(_ADDED) for statement in _added_ddl(backend, version)),
    ]


def _added_ddl(backend: _Backend, version: int) -> list[str]:
    """The CREATE TABLE statements of the tables schema ``version`` added."""
    b, s = backend.blob, backend.table_suffix
    if version == 2:
        return ["CREATE TABLE affseg_fragments (stage TEXT NOT NULL, block BIGINT NOT NULL, id BIGINT NOT NULL, "
                "size BIGINT NOT NULL, z DOUBLE PRECISION, y DOUBLE PRECISION NOT NULL, x DOUBLE PRECISION NOT NULL, "
                f"PRIMARY KEY (stage, block, id)){s}"]
    arrays = ", ".join(f"{name} {b} NOT NULL" for name, _ in _NODE_ARRAYS + _EDGE_ARRAYS)
    return ["CREATE TABLE affseg_block_graphs (stage TEXT NOT NULL, block BIGINT NOT NULL, part INTEGER NOT NULL, "
            f"nodes BIGINT NOT NULL, edges BIGINT NOT NULL, {arrays}, histogram_counts {b}, histogram {b}, "
            f"PRIMARY KEY (stage, block, part)){s}"]


# ---------------------------------------------------------------------------------------------
# block graphs


def _block_graph_rows(node_ids: np.ndarray, sizes: np.ndarray, edges: tuple, histogram: np.ndarray | None) -> list[tuple]:
    """The rows of one block's graph in affseg_block_graphs, without stage and block: ``(part, nodes,
    edges, *arrays, histogram_counts, histogram)``, each array the bytes of its little-endian
    values (:data:`_NODE_ARRAYS`, :data:`_EDGE_ARRAYS`); the histograms as the number of non-zero
    bins of each edge (uint16) and their packed records (:data:`_HIST_RECORD`, in increasing bin
    order), or both NULL. The nodes and the edges are each split into parts of about
    :data:`BLOCK_GRAPH_BYTES` at most (SQLite and PostgreSQL refuse values over 1 GB); part ``k``
    holds the ``k``-th of each (or none)."""
    n = edges[0].shape[0]
    per_edge = np.full(n, sum(np.dtype(dtype).itemsize for _, dtype in _EDGE_ARRAYS), np.int64)
    if histogram is not None:
        flat = np.flatnonzero(histogram != 0)  # (edge by edge, bins increasing)
        counts = np.bincount(flat // HISTOGRAM_BINS, minlength=n)
        first = np.concatenate([[0], np.cumsum(counts)])  # each edge's first record
        records = np.empty(flat.shape[0], _HIST_RECORD)
        records["bin"] = flat % HISTOGRAM_BINS
        records["count"] = histogram.reshape(-1)[flat]
        per_edge += np.dtype(_HIST_COUNTS).itemsize + _HIST_RECORD.itemsize * counts
    edge_bounds = _part_bounds(np.cumsum(per_edge))
    per_node = sum(np.dtype(dtype).itemsize for _, dtype in _NODE_ARRAYS)
    node_bounds = _part_bounds(np.arange(1, node_ids.shape[0] + 1) * per_node)
    rows = []
    for part in range(max(len(edge_bounds), len(node_bounds)) - 1):  # (a part past either's last: none of it)
        low, high = edge_bounds[part:part + 2] if part + 1 < len(edge_bounds) else (n, n)
        start, stop = node_bounds[part:part + 2] if part + 1 < len(node_bounds) else (0, 0)
        arrays = [np.ascontiguousarray(a[start:stop], dtype).tobytes()
                  for a, (_, dtype) in zip((node_ids, sizes), _NODE_ARRAYS)]
        arrays += [np.ascontiguousarray(a[low:high], dtype).tobytes() for a, (_, dtype) in zip(edges, _EDGE_ARRAYS)]
        hist: list[bytes | None] = [None, None]
        if histogram is not None:
            hist = [counts[low:high].astype(_HIST_COUNTS).tobytes(), records[first[low]:first[high]].tobytes()]
        rows.append((part, stop - start, high - low, *arrays, *hist))
    return rows


def _part_bounds(cumulative_bytes: np.ndarray) -> list[int]:
    """Where to cut items of the given cumulative sizes into parts of about
    :data:`BLOCK_GRAPH_BYTES` at most: ``[0, ..., len]`` (``[0, 0]`` for no items)."""
    total = int(cumulative_bytes[-1]) if cumulative_bytes.shape[0] else 0
    cuts = np.searchsorted(cumulative_bytes, np.arange(1, 1 + total // BLOCK_GRAPH_BYTES) * BLOCK_GRAPH_BYTES)
    n = cumulative_bytes.shape[0]
    return [0, *sorted(set(cuts.tolist()) - {0, n}), n]


def _parse_block_graphs(rows: Iterable[tuple], with_hist: bool, where: str) -> tuple[list, list]:
    """Rows of affseg_block_graphs (``block, nodes, edges, *arrays[, histogram_counts, histogram]``)
    as the columns :func:`_merge_rows` takes: ``[ids, sizes]`` and ``[block, u, v, count, sum,
    max, min(, (bytes per edge, [(edges, records), ...]))]``, each row's records kept as they
    came (joining them would hold them twice); a blob of the wrong length is a damaged store
    (CorruptInput)."""
    names = [name for name, _ in _NODE_ARRAYS + _EDGE_ARRAYS]
    dtypes = [np.dtype(dtype) for _, dtype in _NODE_ARRAYS + _EDGE_ARRAYS]
    columns: list[list] = [[] for _ in range(len(names) + 1)]  # + the block of each edge
    lengths, records = [], []
    for row in rows:
        block, nodes, n = row[0], row[1], row[2]
        for k, (blob, dtype) in enumerate(zip(row[3:3 + len(names)], dtypes)):
            count = nodes if k < len(_NODE_ARRAYS) else n
            if len(blob) != count * dtype.itemsize:
                raise CorruptInput(f"the {names[k]} of block {block} in the {where} hold {len(blob)} bytes, not "
                                   f"{count} values of {dtype.itemsize}: the store is damaged")
            columns[k].append(np.frombuffer(blob, dtype).astype(dtype.newbyteorder("="), copy=False))
        columns[-1].append(np.full(n, block, np.int64))
        if with_hist:
            counts_blob, data = row[3 + len(names)], row[4 + len(names)]
            whole = counts_blob is not None and len(counts_blob) == n * np.dtype(_HIST_COUNTS).itemsize
            counts = np.frombuffer(counts_blob, _HIST_COUNTS) if whole else None
            if counts is None or data is None or len(data) != int(counts.sum(dtype=np.int64)) * _HIST_RECORD.itemsize:
                raise CorruptInput(f"the histograms of block {block} in the {where} are not {n} edges' packed "
                                   f"records: the store is damaged")
            lengths.append(counts.astype(np.int64) * _HIST_RECORD.itemsize)
            records.append((n, data))
    arrays = [np.concatenate(c) if c else np.zeros(0, dtype.newbyteorder("="))
              for c, dtype in zip(columns, dtypes + [np.dtype(np.int64)])]
    nodes = arrays[:len(_NODE_ARRAYS)]
    edges = [arrays[-1], *arrays[len(_NODE_ARRAYS):-1]]
    if with_hist:
        edges.append((np.concatenate(lengths) if lengths else np.zeros(0, np.int64), records))
    return nodes, edges


# ---------------------------------------------------------------------------------------------
# the store


class GraphStore:
    """A region graph, lookup tables and block-done records in SQLite or PostgreSQL.

    Open one with :func:`open_store`. Usable as a context manager (closes the connection), safe
    to share between threads (calls are serialised), picklable (reopens by URL).
    """

    def __init__(self, backend: _Backend):
        self._backend = backend
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._stages: dict[str, str] = {}  # stage -> identity digest this object began
        _OPEN_STORES.add(self)

    # -- connection ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The path (SQLite) or URL (PostgreSQL, with its password) this store was opened with."""
        return self._backend.url

    @property
    def backend(self) -> str:
        """``"SQLite"`` or ``"PostgreSQL"``."""
        return self._backend.kind

    def __repr__(self) -> str:
        return f"<{self._backend.describe()}>"

    def __reduce__(self):
        return _reopen, (self.url, dict(self._stages))

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._lock:
            self._backend.close()

    def _open(self, create: bool) -> None:
        backend = self._backend
        backend.connect(create)
        with self._guard():
            with backend.transaction(write=False) as cur:
                state = self._inspect(cur)
            if state == "empty":
                if not create:
                    raise PathNotFound(f"the {backend.describe()} holds no graph store (its tables are created "
                                       "with create=True)")
                self._change_schema("empty", _ddl(backend) + [
                    ("INSERT INTO affseg_meta (key, value) VALUES (?, ?), (?, ?)",
                     ("schema", SCHEMA_NAME, "version", str(SCHEMA_VERSION)))])
            elif state != "current":  # an older version, one way: its affseg no longer opens the store
                old = int(state.split()[1])
                added = [ddl for version in range(old + 1, SCHEMA_VERSION + 1) for ddl in _added_ddl(backend, version)]
                self._change_schema(state, added + [
                    ("UPDATE affseg_meta SET value = ? WHERE key = ?", (str(SCHEMA_VERSION), "version"))])
            elif isinstance(backend, _SQLite):
                backend.set_modes()

    def _change_schema(self, expected: str, statements: list) -> None:
        """Run ``statements`` (SQL, or (SQL, parameters)) in one write transaction if the store is
        still in the ``expected`` state (a concurrent opener may have done it first)."""
        backend = self._backend
        if isinstance(backend, _SQLite):
            backend.set_modes()
        with backend.transaction(write=True) as cur:
            backend.before_create(cur)
            if self._inspect(cur) == expected:
                for statement in statements:
                    if isinstance(statement, tuple):
                        cur.execute(backend.sql(statement[0]), statement[1])
                    else:
                        cur.execute(statement)

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's connection (without disturbing it) and lock."""
        self._lock = threading.RLock()  # another thread of the parent may have held it
        self._backend.detach()
        self._pid = os.getpid()

    def _inspect(self, cur) -> str:
        """``"empty"``, ``"current"`` (this schema and version) or ``"version N"`` (an older version's
        store, to bring up to date); raises CorruptInput for anything else."""
        where = self._backend.describe()
        tables = self._backend.tables(cur)
        if not tables:
            return "empty"
        meta: dict = {}
        if "affseg_meta" in tables:
            cur.execute("SELECT key, value FROM affseg_meta")
            meta = dict(cur.fetchall())
        ours, version = meta.get("schema") == SCHEMA_NAME, str(meta.get("version"))
        newer = ours and version.isdigit() and int(version) > SCHEMA_VERSION  # (it may have tables of its own)
        foreign = sorted(tables - set(_TABLES))
        if foreign and not newer:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise CorruptInput(f"the {where} is not an affseg graph store: it holds other tables ({shown}); "
                               f"{self._backend.elsewhere}")
        missing = sorted(set(_TABLES) - tables)
        old = {str(v): v for v in range(1, SCHEMA_VERSION)}.get(version) if ours else None
        if missing and old is not None and set(missing) == {
                name for added in range(old + 1, SCHEMA_VERSION + 1) for name in _ADDED[added]}:
            return f"version {old}"
        if missing and not newer:
            raise CorruptInput(f"the {where} is an incomplete affseg graph store: it lacks {', '.join(missing)}")
        if not ours:
            raise CorruptInput(f"the {where} is not an affseg graph store (schema {meta.get('schema')!r})")
        if version != str(SCHEMA_VERSION):
            raise CorruptInput(f"the {where} has graph-store schema version {version}, this affseg "
                               f"reads version {SCHEMA_VERSION}: use the affseg that wrote it, or a new store")
        return "current"

    @contextlib.contextmanager
    def _guard(self):
        """Serialise threads, reconnect after a fork, and name the store in driver errors."""
        with self._lock:
            if os.getpid() != self._pid:  # forked without the at-fork hook (not from Python)
                self._after_fork()
            if self._backend.conn is None and self._backend.url:
                self._backend.connect(False)
            try:
                yield
            except AffsegError:
                raise
            except sqlite3.DatabaseError as error:
                if "malformed" in str(error) or "not a database" in str(error):
                    raise CorruptInput(f"the {self._backend.describe()} is damaged: {error}") from error
                raise AffsegError(f"the {self._backend.describe()} failed: {error}") from error
            except Exception as error:
                if type(error).__module__.startswith("psycopg"):
                    raise AffsegError(f"the {self._backend.describe()} failed: {error}") from error
                raise

    def _transaction(self, write: bool):
        return self._backend.transaction(write)

    def _execute(self, cur, statement: str, params=()) -> None:
        cur.execute(self._backend.sql(statement), params)

    # -- stages and done records ---------------------------------------------------------------

    def begin_stage(self, stage: str, identity: Mapping, *, overwrite: bool = False) -> set[int]:
        """Record a stage's identity (once) and return its blocks already done.

        Parameters
        ----------
        stage : str
            The stage's name (e.g. ``"fragments"``, ``"region_graph"``).
        identity : dict
            JSON-serialisable description of everything the stage's outputs depend on (see
            :func:`stage_identity`).
        overwrite : bool
            If another identity is stored for the stage: discard the stage's done records, its
            nodes, edges and lookup tables, and store this identity. (With the same identity
            nothing is discarded: the done blocks are valid; see :meth:`reset_stage`.)

        Returns
        -------
        done : set of int
            The block ids already done under this identity (empty for a new stage).

        Raises
        ------
        OutputExists
            If the stage was begun with another identity and ``overwrite`` is false.
        """
        stage = _check_stage_name(stage)
        text = _canonical(identity)
        overwrite = as_flag(overwrite, name="overwrite")
        digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        with self._guard(), self._transaction(write=True) as cur:
            # insert-if-absent first: two runs beginning a new stage at once do not collide
            self._execute(cur, "INSERT INTO affseg_stages (stage, identity, digest) VALUES (?, ?, ?) "
                               "ON CONFLICT (stage) DO NOTHING", (stage, text, digest))
            self._execute(cur, "SELECT identity, digest FROM affseg_stages WHERE stage = ?" + self._backend.lock_update,
                          (stage,))
            row = cur.fetchone()
            if row[1] != digest:
                if not overwrite:
                    self._execute(cur, "SELECT count(*) FROM affseg_done WHERE stage = ?", (stage,))
                    (count,) = cur.fetchone()
                    raise OutputExists(
                        f"stage {stage!r} of the {self._backend.describe()} was run with other parameters "
                        f"({_differences(row[0], text)}); its {count} done blocks do not fit this run: rerun with "
                        "overwrite=True (--overwrite) to discard them, or use another store")
                self._clear(cur, stage)
                self._execute(cur, "UPDATE affseg_stages SET identity = ?, digest = ? WHERE stage = ?",
                              (text, digest, stage))
                done = set()
            else:
                done = self._done(cur, stage)
        self._stages[stage] = digest
        return done

    def reset_stage(self, stage: str) -> None:
        """Forget a stage: its identity, done records, nodes, edges, fragments and lookup tables."""
        stage = _check_stage_name(stage)
        with self._guard(), self._transaction(write=True) as cur:
            self._clear(cur, stage)
            self._execute(cur, "DELETE FROM affseg_stages WHERE stage = ?", (stage,))
        self._stages.pop(stage, None)

    def _clear(self, cur, stage: str) -> None:
        for table in ("affseg_done", "affseg_parts", "affseg_nodes", "affseg_edges", "affseg_block_graphs",
                      "affseg_fragments"):
            self._execute(cur, f"DELETE FROM {table} WHERE stage = ?", (stage,))
        self._execute(cur, "DELETE FROM affseg_lookup_entries WHERE name IN "
                           "(SELECT name FROM affseg_lookups WHERE stage = ?)", (stage,))
        self._execute(cur, "DELETE FROM affseg_lookups WHERE stage = ?", (stage,))

    def identity(self, stage: str) -> dict | None:
        """The identity stored for a stage, or None if it was never begun."""
        stage = _check_stage_name(stage)
        with self._guard(), self._transaction(write=False) as cur:
            self._execute(cur, "SELECT identity FROM affseg_stages WHERE stage = ?", (stage,))
            row = cur.fetchone()
        return None if row is None else json.loads(row[0])

    def stages(self) -> dict[str, dict]:
        """Every begun stage with its identity."""
        with self._guard(), self._transaction(write=False) as cur:
            self._execute(cur, "SELECT stage, identity FROM affseg_stages ORDER BY stage")
            rows = cur.fetchall()
        return {stage: json.loads(text) for stage, text in rows}

    def _check_stage(self, cur, stage: str) -> None:
        """Inside a write: the stage must be begun, with the identity this object began (if any)."""
        self._execute(cur, "SELECT digest FROM affseg_stages WHERE stage = ?" + self._backend.lock_clause, (stage,))
        row = cur.fetchone()
        if row is None:
            raise InputError(f"stage {stage!r} was not begun in the {self._backend.describe()}: "
                             "call begin_stage(stage, identity) before writing its blocks")
        expected = self._stages.get(stage)
        if expected is not None and row[0] != expected:
            raise OutputExists(f"stage {stage!r} of the {self._backend.describe()} was begun again with other "
                               "parameters (overwrite) by another run since this one began: stop one of the runs")

    def mark_done(self, stage: str, block_ids: Iterable[int]) -> None:
        """Record blocks of a begun stage as done (call it only once their outputs are durable)."""
        stage = _check_stage_name(stage)
        ids = self._block_ids(block_ids)
        with self._guard(), self._transaction(write=True) as cur:
            self._check_stage(cur, stage)
            self._mark(cur, stage, ids)

    def _block_ids(self, block_ids) -> list[int]:
        if isinstance(block_ids, (int, np.integer)):
            block_ids = [block_ids]
        try:
            items = list(block_ids)
        except TypeError:
            raise InputError(f"block_ids must be a list of block ids, got {describe(block_ids)}") from None
        return [as_int(b, name="block id", minimum=0, maximum=MAX_BLOCK_ID) for b in items]

    def _mark(self, cur, stage: str, ids: list[int]) -> None:
        cur.executemany(self._backend.sql("INSERT INTO affseg_done (stage, block) VALUES (?, ?) "
                                          "ON CONFLICT (stage, block) DO NOTHING"),
                        [(stage, b) for b in sorted(set(ids))])

    def done_blocks(self, stage: str) -> set[int]:
        """The ids of the blocks of ``stage`` recorded as done (empty if it was never begun)."""
        stage = _check_stage_name(stage)
        with self._guard(), self._transaction(write=False) as cur:
            return self._done(cur, stage)

    def _done(self, cur, stage: str) -> set[int]:
        self._execute(cur, "SELECT block FROM affseg_done WHERE stage = ?", (stage,))
        return {block for (block,) in cur.fetchall()}

    # -- region graph --------------------------------------------------------------------------

    def write_block(self, block_id: int, statistics: EdgeStatistics, stage: str = "region_graph") -> None:
        """Store one block's statistics and mark it done, atomically and idempotently.

        The block's earlier rows in ``stage`` (a retried write) are replaced, not added to.

        Parameters
        ----------
        block_id : int
            The block (``0 <= block_id < 2**63``).
        statistics : EdgeStatistics
            Its nodes and edges (e.g. :func:`~affseg.graph.mala.statistics.edge_statistics`
            with ``owned`` = its write region); ``contacts`` are not stored.
        stage : str
            A stage begun with :meth:`begin_stage`.

        Raises
        ------
        InputError
            For a stage not begun, a bad block id, or statistics with inconsistent arrays,
            negative ids, or an edge or node listed twice.
        OutputExists
            If the stage was begun again with another identity since this object began it.
        """
        stage = _check_stage_name(stage)
        block = as_int(block_id, name="block_id", minimum=0, maximum=MAX_BLOCK_ID)
        if not isinstance(statistics, EdgeStatistics):
            raise InputError(f"statistics must be an EdgeStatistics, got {describe(statistics)}")
        node_ids = uint64_to_sql(_as_ids(statistics.node_ids, name="statistics.node_ids"))
        sizes = _as_column(statistics.node_sizes, np.int64, name="statistics.node_sizes", length=node_ids.shape[0])
        u = uint64_to_sql(_as_ids(statistics.u, name="statistics.u"))
        v = uint64_to_sql(_as_ids(statistics.v, name="statistics.v"))
        n = u.shape[0]
        if v.shape[0] != n:
            raise InputError(f"statistics.u and statistics.v differ in length: {n} and {v.shape[0]}")
        count = _as_column(statistics.count, np.int64, name="statistics.count", length=n)
        total = _as_column(statistics.sum, np.float64, name="statistics.sum", length=n)
        top = _as_column(statistics.max, np.float32, name="statistics.max", length=n)
        bottom = _as_column(statistics.min, np.float32, name="statistics.min", length=n)
        hist = None
        if statistics.histogram is not None:
            hist = np.asarray(statistics.histogram)
            if hist.shape != (n, HISTOGRAM_BINS) or hist.dtype.kind not in "iu":
                raise InputError(f"statistics.histogram must be ({n}, {HISTOGRAM_BINS}) integers, got "
                                 f"{hist.dtype} of shape {hist.shape}")
            if hist.size and (hist.min() < 0 or hist.max() > 2**32 - 1):
                raise InputError("statistics.histogram must hold counts in [0, 2**32)")
            hist = hist.astype(np.uint32, copy=False)
        if np.unique(node_ids).shape[0] != node_ids.shape[0]:
            raise InputError(f"statistics of block {block} list a node twice")
        su, sv = (a[np.lexsort((v, u))] for a in (u, v))
        if n and np.any((su[1:] == su[:-1]) & (sv[1:] == sv[:-1])):
            raise InputError(f"statistics of block {block} list an edge twice")
        rows = [(stage, block, *row) for row in _block_graph_rows(node_ids, sizes, (u, v, count, total, top, bottom),
                                                                  hist)]
        columns = ("stage", "block", "part", "nodes", "edges", *(name for name, _ in _NODE_ARRAYS + _EDGE_ARRAYS),
                   "histogram_counts", "histogram")
        with self._guard(), self._transaction(write=True) as cur:
            self._check_stage(cur, stage)
            # first: lock the block's row, so that two writers of one block take turns
            self._execute(cur, "INSERT INTO affseg_parts (stage, block, histogram, nodes, edges) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stage, block) DO UPDATE SET "
                               "histogram = excluded.histogram, nodes = excluded.nodes, edges = excluded.edges",
                          (stage, block, int(statistics.histogram is not None), int(node_ids.shape[0]), n))
            for table in ("affseg_block_graphs", "affseg_nodes", "affseg_edges"):  # (the last two: older stores)
                self._execute(cur, f"DELETE FROM {table} WHERE stage = ? AND block = ?", (stage, block))
            cur.executemany(self._backend.sql(f"INSERT INTO affseg_block_graphs ({', '.join(columns)}) VALUES "
                                              f"({', '.join('?' * len(columns))})"), rows)
            self._mark(cur, stage, [block])

    def read_statistics(self, stage: str | list[str] | tuple[str, ...] = "region_graph", *,
                        histogram: bool = True) -> EdgeStatistics:
        """The statistics of all blocks written in ``stage`` (or in several stages), merged.

        Equal (bitwise, float sums included) to
        :func:`~affseg.graph.mala.statistics.merge_edge_statistics` of the blocks' statistics in
        increasing block order (a block's parts in several stages: in the order of ``stage``):
        node sizes, counts, sums and histograms add up; max of the maxima, min of the
        minima.

        Parameters
        ----------
        stage : str or list of str
            The stage (or stages, each read once) the blocks were written in.
        histogram : bool
            Also read the histograms (1 KiB per edge in memory); they are None anyway if any
            block was written without them.

        Returns
        -------
        statistics : EdgeStatistics
            Empty if no block was written.
        """
        if not isinstance(stage, (str, list, tuple)):
            raise InputError(f"stage must be a stage name or a list of them, got {describe(stage)}")
        names = list(dict.fromkeys(_check_stage_name(name) for name in ([stage] if isinstance(stage, str) else stage)))
        if not names:
            raise InputError("read_statistics needs at least one stage, got none")
        histogram = as_flag(histogram, name="histogram")
        among = f"stage IN ({', '.join('?' * len(names))})"
        where = self._backend.describe()
        with self._guard(), self._transaction(write=False) as cur:
            self._execute(cur, f"SELECT count(*), min(histogram) FROM affseg_parts WHERE {among}", tuple(names))
            parts, all_hist = cur.fetchone()
            with_hist = histogram and (not parts or bool(all_hist))
            if not parts:
                return empty_edge_statistics(histogram=with_hist)
            arrays = ", ".join(name for name, _ in _NODE_ARRAYS + _EDGE_ARRAYS)
            hist = ", histogram_counts, histogram" if with_hist else ""
            # stage by stage, in the order given; _merge_rows orders the rows by block
            node_parts, edge_parts = [], []
            for name in names:
                nodes, edges = _parse_block_graphs(itertools.chain.from_iterable(self._backend.stream(
                    cur, f"SELECT block, nodes, edges, {arrays}{hist} FROM affseg_block_graphs WHERE stage = ? "
                         "ORDER BY block, part", (name,), BLOCK_GRAPH_ROWS)), with_hist, where)
                node_parts.append(nodes)
                edge_parts.append(edges)
                if self._has_rows(cur, "affseg_nodes", name) or self._has_rows(cur, "affseg_edges", name):
                    node_parts.append(self._legacy_nodes(cur, name))  # blocks written before schema version 3
                    edge_parts.append(self._legacy_edges(cur, name, with_hist))
        edge_dtypes = (np.int64,) * 4 + (np.float64, np.float32, np.float32) + ((bytes,) if with_hist else ())
        nodes = _concatenate_columns(node_parts, (np.int64, np.int64))
        edges = _concatenate_columns(edge_parts, edge_dtypes)
        del edge_parts  # (the merge below needs the memory)
        return _merge_rows(nodes, edges, with_hist)

    def _has_rows(self, cur, table: str, stage: str) -> bool:
        self._execute(cur, f"SELECT 1 FROM {table} WHERE stage = ? LIMIT 1", (stage,))
        return cur.fetchone() is not None

    def _legacy_nodes(self, cur, stage: str) -> list:
        """The nodes of the blocks a store of schema version 1 or 2 wrote as rows."""
        return _read_columns(self._backend.stream(
            cur, "SELECT id, size FROM affseg_nodes WHERE stage = ?", (stage,)), (np.int64, np.int64))

    def _legacy_edges(self, cur, stage: str, with_hist: bool) -> list:
        """The edges of the blocks a store of schema version 1 or 2 wrote as rows (one an edge)."""
        columns = "block, u, v, count, sum, max, min" + (", histogram" if with_hist else "")
        dtypes = (np.int64,) * 4 + (np.float64,) * 3 + ((bytes,) if with_hist else ())
        return _read_columns(self._backend.stream(
            cur, f"SELECT {columns} FROM affseg_edges WHERE stage = ?", (stage,)), dtypes)

    # -- fragments -----------------------------------------------------------------------------

    def write_fragments(self, block_id: int, ids, sizes, centres, *, stage: str) -> None:
        """Store one block's fragments and mark it done, atomically and idempotently (a retried
        write replaces the block's rows).

        Parameters
        ----------
        block_id : int
            The block (``0 <= block_id < 2**63``).
        ids : (n,) uint64
            Its fragment ids, each once.
        sizes : (n,) int
            Their voxel counts.
        centres : (n, 3) or (n, 2) float
            Their centres in voxel coordinates of the whole volume (zyx, or yx in 2D).
        stage : str
            A stage begun with :meth:`begin_stage`.

        Raises
        ------
        InputError
            For a stage not begun, a bad block id, arrays of other lengths, an id listed twice,
            a size below 1, or centres that are not finite.
        OutputExists
            If the stage was begun again with another identity since this object began it.
        """
        stage = _check_stage_name(stage)
        block = as_int(block_id, name="block_id", minimum=0, maximum=MAX_BLOCK_ID)
        ids = uint64_to_sql(_as_ids(ids, name="ids"))
        n = ids.shape[0]
        sizes = _as_column(sizes, np.int64, name="sizes", length=n)
        centres = np.asarray(centres, np.float64)
        if centres.ndim != 2 or centres.shape[0] != n or centres.shape[1] not in (2, 3):
            raise InputError(f"centres must have shape ({n}, 3) or ({n}, 2), got {centres.shape}")
        if n and sizes.min() < 1:
            i = int(np.argmin(sizes))
            raise InputError(f"fragment sizes must be at least 1, got {int(sizes[i])} for id {int(sql_to_uint64(ids)[i])}")
        if n and not np.isfinite(centres).all():
            i = int(np.flatnonzero(~np.isfinite(centres).all(axis=1))[0])
            raise InputError(f"fragment centres must be finite, got {centres[i].tolist()} for id "
                             f"{int(sql_to_uint64(ids)[i])}")
        unique, counts = np.unique(ids, return_counts=True)
        if unique.shape[0] != n:
            twice = int(sql_to_uint64(unique[counts > 1][:1])[0])
            raise InputError(f"the fragments of block {block} list the id {twice} twice")
        z = centres[:, 0].tolist() if centres.shape[1] == 3 else [None] * n
        rows = zip([stage] * n, [block] * n, ids.tolist(), sizes.tolist(), z, centres[:, -2].tolist(),
                   centres[:, -1].tolist())
        with self._guard(), self._transaction(write=True) as cur:
            self._check_stage(cur, stage)
            self._execute(cur, "INSERT INTO affseg_parts (stage, block, histogram, nodes, edges) "
                               "VALUES (?, ?, 0, ?, 0) ON CONFLICT (stage, block) DO UPDATE SET nodes = excluded.nodes",
                          (stage, block, n))  # first: lock the block's row (writers of one block take turns)
            self._execute(cur, "DELETE FROM affseg_fragments WHERE stage = ? AND block = ?", (stage, block))
            self._backend.insert_many(cur, "affseg_fragments", ("stage", "block", "id", "size", "z", "y", "x"), rows)
            self._mark(cur, stage, [block])

    def read_fragments(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every fragment written in ``stage``: ``(ids, sizes, centres)``, sorted by id.

        Returns
        -------
        ids : (n,) uint64
        sizes : (n,) int64
        centres : (n, 3) or (n, 2) float64
            Voxel coordinates, zyx (yx for 2D volumes). An id written by several blocks has
            their sizes added and the size-weighted mean of their centres.
        """
        stage = _check_stage_name(stage)
        with self._guard(), self._transaction(write=False) as cur:
            self._execute(cur, "SELECT count(*) FROM affseg_fragments WHERE stage = ? AND z IS NULL", (stage,))
            flat = cur.fetchone()[0] > 0
            columns = "id, size, y, x" if flat else "id, size, z, y, x"
            rows = _read_columns(self._backend.stream(
                cur, f"SELECT {columns} FROM affseg_fragments WHERE stage = ? ORDER BY block, id", (stage,)),
                (np.int64, np.int64) + (np.float64,) * (2 if flat else 3))
        ids, index = np.unique(sql_to_uint64(rows[0]), return_inverse=True)
        index = index.reshape(-1)
        sizes = np.bincount(index, weights=rows[1], minlength=ids.shape[0]).astype(np.int64)
        weighted = [np.bincount(index, weights=c * rows[1], minlength=ids.shape[0]) for c in rows[2:]]
        centres = np.stack(weighted, axis=1) / np.maximum(sizes, 1)[:, None] if ids.shape[0] else \
            np.zeros((0, len(rows) - 2))
        return ids, sizes, centres

    # -- lookup tables -------------------------------------------------------------------------

    def write_lookup(self, name: str, old_ids, new_ids, *, stage: str = "agglomerate") -> None:
        """Store (replace) the lookup table ``name``: fragment ``old_ids[i]`` -> segment ``new_ids[i]``.

        Parameters
        ----------
        name : str
            The table's name (e.g. ``"threshold_0.50"``).
        old_ids, new_ids : (n,) array_like of int
            Ids in [0, 2**64); ``old_ids`` without repeats.
        stage : str
            The begun stage that owns the table (overwriting the stage discards it).
        """
        name = _check_stage_name(name)
        stage = _check_stage_name(stage)
        old = _as_ids(old_ids, name="old_ids")
        new = _as_ids(new_ids, name="new_ids")
        if old.shape != new.shape:
            raise InputError(f"old_ids and new_ids differ in length: {old.shape[0]} and {new.shape[0]}")
        if np.unique(old).shape[0] != old.shape[0]:
            raise InputError(f"old_ids of lookup table {name!r} repeat an id: each fragment maps to one segment")
        n = old.shape[0]
        rows = zip([name] * n, uint64_to_sql(old).tolist(), uint64_to_sql(new).tolist())
        with self._guard(), self._transaction(write=True) as cur:
            self._check_stage(cur, stage)
            self._execute(cur, "INSERT INTO affseg_lookups (name, stage, size) VALUES (?, ?, ?) ON CONFLICT (name) "
                               "DO UPDATE SET stage = excluded.stage, size = excluded.size", (name, stage, n))
            self._execute(cur, "DELETE FROM affseg_lookup_entries WHERE name = ?", (name,))
            self._backend.insert_many(cur, "affseg_lookup_entries", ("name", "old", "new"), rows)

    def read_lookup(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The lookup table ``name`` as ``(old_ids, new_ids)``, uint64, sorted by ``old_ids``.

        Raises
        ------
        InputError
            If there is no table of that name (the message lists those there are).
        """
        name = _check_stage_name(name)
        with self._guard(), self._transaction(write=False) as cur:
            self._execute(cur, "SELECT size FROM affseg_lookups WHERE name = ?", (name,))
            row = cur.fetchone()
            if row is None:
                self._execute(cur, "SELECT name FROM affseg_lookups ORDER BY name")
                names = [n for (n,) in cur.fetchall()]
                raise InputError(f"no lookup table {name!r} in the {self._backend.describe()} (it has "
                                 f"{', '.join(map(repr, names[:10])) or 'none'})")
            old, new = _read_columns(self._backend.stream(
                cur, "SELECT old, new FROM affseg_lookup_entries WHERE name = ?", (name,)), (np.int64, np.int64))
        old, new = sql_to_uint64(old), sql_to_uint64(new)
        order = np.argsort(old, kind="stable")
        return old[order], new[order]

    def lookups(self) -> dict[str, str]:
        """The names of the stored lookup tables, each with the stage that owns it."""
        with self._guard(), self._transaction(write=False) as cur:
            self._execute(cur, "SELECT name, stage FROM affseg_lookups ORDER BY name")
            return dict(cur.fetchall())


def _read_columns(chunks: Iterable[list[tuple]], dtypes: tuple) -> list:
    """Rows fetched in chunks as one array per column (a ``bytes`` column: (lengths, [(rows, joined
    bytes)]), as :func:`_merge_rows` takes it), converted chunk by chunk so that few Python objects
    live at once."""
    pieces: list[list] = [[] for _ in dtypes]
    for rows in chunks:
        columns = list(zip(*rows))
        for k, dtype in enumerate(dtypes):
            if dtype is bytes:
                pieces[k].append((np.fromiter(map(len, columns[k]), np.int64, len(rows)), b"".join(columns[k])))
            else:
                pieces[k].append(np.array(columns[k], dtype=dtype))
    out: list = []
    for k, dtype in enumerate(dtypes):
        if dtype is bytes:
            lengths = np.concatenate([p[0] for p in pieces[k]]) if pieces[k] else np.zeros(0, np.int64)
            out.append((lengths, [(lengths.shape[0], b"".join(p[1] for p in pieces[k]))]))
        else:
            out.append(np.concatenate(pieces[k]) if pieces[k] else np.zeros(0, dtype))
    return out


def _concatenate_columns(parts: list[list], dtypes: tuple) -> list:
    """The columns of several :func:`_read_columns` results, one after the other."""
    if len(parts) == 1:
        return parts[0]
    out: list = []
    for k, dtype in enumerate(dtypes):
        if dtype is bytes:
            out.append((np.concatenate([p[k][0] for p in parts]), [chunk for p in parts for chunk in p[k][1]]))
        else:
            out.append(np.concatenate([p[k] for p in parts]))
    return out


def _merge_rows(nodes: list, edges: list, with_hist: bool) -> EdgeStatistics:
    """Rows of several blocks (``edges[0]``: their block; rows of one block in the order its stages
    are to be merged) merged as merge_edge_statistics merges the blocks' statistics in block order."""
    node_ids, node_index = np.unique(sql_to_uint64(nodes[0]), return_inverse=True)
    node_sizes = np.zeros(node_ids.shape[0], np.int64)
    np.add.at(node_sizes, node_index.reshape(-1), nodes[1])
    block, edges = edges[0], edges[1:]
    n = edges[0].shape[0]
    if n == 0:
        return dataclasses.replace(empty_edge_statistics(histogram=with_hist), node_ids=node_ids, node_sizes=node_sizes)
    u, v = sql_to_uint64(edges[0]), sql_to_uint64(edges[1])
    count, total = edges[2], edges[3]
    top, bottom = edges[4].astype(np.float32, copy=False), edges[5].astype(np.float32, copy=False)
    order = np.lexsort((block, v, u))  # stable: an edge's rows in block order, then as they came
    su, sv = u[order], v[order]
    first = np.ones(n, bool)
    first[1:] = (su[1:] != su[:-1]) | (sv[1:] != sv[:-1])
    starts = np.flatnonzero(first)
    histogram = None
    if with_hist:
        from ._kernels import add_packed_histograms

        lengths, chunks = edges[6]
        cut = np.flatnonzero(lengths % _HIST_RECORD.itemsize)
        if cut.size:  # (the kernel below would read past them)
            raise CorruptInput(f"{cut.size} histogram blobs of the store are not whole {_HIST_RECORD.itemsize}-byte "
                               f"records (one has {int(lengths[cut[0]])} bytes): the store is damaged")
        group = np.empty(n, np.int64)
        group[order] = np.cumsum(first) - 1
        histogram = np.zeros((starts.shape[0], HISTOGRAM_BINS), np.uint32)
        # from the packed records as they came (no array per record: the merged graph's dense
        # histograms, 1 KiB per edge, are the largest thing in memory here)
        start = 0
        for rows, data in chunks:
            add_packed_histograms(histogram, group[start:start + rows],
                                  lengths[start:start + rows] // _HIST_RECORD.itemsize, np.frombuffer(data, np.uint8))
            start += rows
    return EdgeStatistics(
        node_ids=node_ids, node_sizes=node_sizes, u=su[starts], v=sv[starts],
        count=np.add.reduceat(count[order], starts), sum=np.add.reduceat(total[order], starts),
        max=np.maximum.reduceat(top[order], starts), min=np.minimum.reduceat(bottom[order], starts),
        histogram=histogram)
