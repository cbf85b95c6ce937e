"""Pytest plugin: every query the library sends must be served by an index the hub creates.

Why this exists
===============
On MongoDB a query that no index serves is a collection scan (or a blocking in-memory sort),
which is invisible on a test database of ten documents and painful on a hub with a million.
None of our test servers can show it (FerretDB scans whatever indexes exist), so instead of
asking a server for its query plans, this plugin checks the *shape* of each query against the
indexes themselves, by the rule MongoDB's planner follows (below).

How it works
============
1. Recording. A :class:`pymongo.monitoring.CommandListener` is registered globally in
   ``pytest_configure``, before any fixture or test creates a client. It sees every command a
   real-server client sends (mongomock sends none, so the ``mongomock`` backend adds nothing;
   the ``ferretdb`` and ``mongodb`` backends run the same tests on the wire). Of these it keeps
   the query commands (find, count, distinct, update, delete, findAndModify and aggregate's
   leading ``$match``/``$sort`` stages; countDocuments is an aggregate with ``$match``) and
   reduces each to a :class:`QueryShape`: the collection, the field paths and the operators
   used on them, the sort. Values are never kept.
2. Only the library's own queries count. The listener is called synchronously in the thread
   that sends the command, so the call stack says who sent it: going outward from pymongo,
   the first frame outside pymongo, bson, gridfs and the standard library must belong to the
   ``tensorhub`` package. That drops the fixtures' own commands (drop database, ping) *and* a
   test's direct inspection through ``hub.db[...]``, which uses the library's client (so the
   client's ``appname="tensorhub"``, which a global listener cannot see anyway, would not tell
   the two apart).
3. The indexes the hub creates. At the end of the session the plugin constructs
   ``TensorHub("mongomock://localhost/<fresh database>", project_name="x")`` and reads
   ``index_information()`` of every collection, so the rule follows ``ensure_indexes()`` as
   the code has it; nothing is duplicated here. A collection with no entry has its ``_id``
   index only.
4. The check. A shape is served when one index serves it (:func:`index_serves`, the ESR rule):
   the index's first keys are the query's equality fields (in any order among themselves),
   the next keys the sort fields in order (directions all equal or all reversed), the next
   keys the range fields. ``$in`` counts as equality; ``$or`` needs every branch (with the
   fields outside the ``$or``) served; an equality on ``_id`` is always served; a query with
   no filter and no sort is allowed only for the commands in :data:`UNFILTERED_ALLOWED`.
5. Failing. After the session the terminal summary shows a table of the shapes no index
   serves (collection, command, filter shape, sort, an index by the ESR rule that would serve
   it, the paths no index of the collection has at all (typically a user's own query fields),
   the test that first sent it, the library line that sent it) and the run's exit status
   becomes "tests failed".

Options: ``--index-coverage=fail`` (default), ``report`` (print the table, keep the exit
status) or ``off``; ``-p no:index_coverage`` unloads the plugin.

With pytest-xdist each worker records its own shapes and hands them to the controller
(``workeroutput``), which checks the union once. When only some tests run, only the shapes
those tests sent are checked. Queries sent by other processes (runner daemons a test starts as
subprocesses) are not seen; the same library code runs in-process in other tests.
"""
from __future__ import annotations

import json
import re
import secrets
import sys
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pytest
from bson.regex import Regex
from pymongo import monitoring

#: The package whose queries are checked (the library under test; not a field name).
LIBRARY_PACKAGE = "tensorhub"

#: Commands that read or match documents by a filter. insert needs no index; getMore and
#: killCursors continue a find/aggregate already recorded.
QUERY_COMMANDS = frozenset({"find", "count", "distinct", "update", "delete", "findAndModify", "aggregate"})

#: Databases that hold server state, never the hub's data.
SYSTEM_DATABASES = frozenset({"admin", "config", "local"})

#: Operators that pin a field to a point (or a few points) of the index: they make up the
#: equality prefix. Every other operator ($gt, $ne, $exists, $regex, $elemMatch, ...) is a range.
EQUALITY_OPERATORS = frozenset({"$eq", "$in"})

#: Queries with no filter and no sort that are allowed, by command, and why:
#: - ``count`` without a query is estimatedDocumentCount: the server answers it from the
#:   collection's metadata and reads no document;
#: - ``find`` limited to one document reads the first document it meets and stops.
#: Anything else without a filter reads the whole collection and must be served by an index
#: (sort) or redesigned.
UNFILTERED_ALLOWED = frozenset({"count", "find:single"})

#: Modules whose frames sit between the library and the listener (or around the library, as
#: threading does for background threads); they are skipped when looking for the sender.
_TRANSPARENT_PACKAGES = frozenset({"pymongo", "bson", "gridfs"}) | frozenset(sys.stdlib_module_names)

_OPTION = "--index-coverage"
_WORKER_OUTPUT_KEY = "tensorhub_index_coverage"

Sort = tuple[tuple[str, int], ...]


# -- shapes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predicate:
    """The shape of a filter: each field path with the operators used on it, and its ``$or`` groups.

    ``$and`` is flattened into ``fields``; each ``$or`` becomes one group of branch predicates.
    """

    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ors: tuple[tuple[Predicate, ...], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.fields and not self.ors

    @property
    def equality(self) -> frozenset[str]:
        """Paths pinned to points: some operator on them is ``$eq`` (a plain value) or ``$in``."""
        return frozenset(path for path, ops in self.fields if EQUALITY_OPERATORS.intersection(ops))

    @property
    def ranges(self) -> frozenset[str]:
        """Every other constrained path (including ``$expr``-like pseudo-paths no index has)."""
        return frozenset(path for path, _ in self.fields) - self.equality

    def paths(self) -> frozenset[str]:
        """Every path this predicate or any of its ``$or`` branches constrains."""
        found = {path for path, _ in self.fields}
        for group in self.ors:
            for branch in group:
                found |= branch.paths()
        return frozenset(found)

    def merged(self, other: Predicate) -> Predicate:
        """The conjunction of both predicates (operators on a shared path are united)."""
        fields: dict[str, set[str]] = {path: set(ops) for path, ops in self.fields}
        for path, ops in other.fields:
            fields.setdefault(path, set()).update(ops)
        return _make_predicate(fields, list(self.ors) + list(other.ors))

    def render(self) -> str:
        parts = [f"{path}: {'|'.join(ops)}" for path, ops in self.fields]
        parts += ["$or: [" + ", ".join(branch.render() for branch in group) + "]" for group in self.ors]
        return "{" + ", ".join(parts) + "}"

    def to_data(self) -> dict[str, Any]:
        return {"fields": [[path, list(ops)] for path, ops in self.fields],
                "ors": [[branch.to_data() for branch in group] for group in self.ors]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Predicate:
        return cls(tuple((str(path), tuple(ops)) for path, ops in data["fields"]),
                   tuple(tuple(cls.from_data(branch) for branch in group) for group in data["ors"]))


def _make_predicate(fields: Mapping[str, Iterable[str]], ors: Iterable[Iterable[Predicate]]) -> Predicate:
    """A canonical Predicate: sorted paths and operators, sorted and deduplicated branches, so
    that the same query shape written in another key order is the same shape."""
    groups = {tuple(sorted(set(group), key=Predicate.render)) for group in ors}
    return Predicate(tuple(sorted((path, tuple(sorted(set(ops)))) for path, ops in fields.items())),
                     tuple(sorted(groups, key=lambda group: [branch.render() for branch in group])))


def predicate_of(filter_: Mapping[str, Any] | None) -> Predicate:
    """The shape of a MongoDB filter document.

    >>> predicate_of({"a": 1, "b": {"$gt": 2}, "$or": [{"c": 1}, {"d": {"$in": [1]}}]}).render()
    '{a: $eq, b: $gt, $or: [{c: $eq}, {d: $in}]}'
    """
    fields: dict[str, set[str]] = {}
    ors: list[tuple[Predicate, ...]] = []
    _collect(filter_ or {}, fields, ors)
    return _make_predicate(fields, ors)


def _collect(filter_: Mapping[str, Any], fields: dict[str, set[str]], ors: list[tuple[Predicate, ...]]) -> None:
    for key, value in filter_.items():
        if key == "$and":
            for part in value:
                _collect(part, fields, ors)
        elif key == "$or":
            branches = {predicate_of(part) for part in value}
            if len(branches) == 1:
                # One branch, or branches of one shape ({$or: [{a: 1}, {a: 2}]} is a: $in):
                # a plain conjunction, as the planner sees it too.
                branch = branches.pop()
                for path, ops in branch.fields:
                    fields.setdefault(path, set()).update(ops)
                ors.extend(branch.ors)
            elif branches:
                ors.append(tuple(branches))
        elif key == "$nor":
            # A negation bounds no index range usefully; its paths constrain like ranges.
            for part in value:
                for path in predicate_of(part).paths():
                    fields.setdefault(path, set()).add("$nor")
        elif key == "$comment":
            continue
        elif key.startswith("$"):
            # $expr, $where, $text, $jsonSchema: no index key is named so, so only an _id
            # equality next to them can make such a query served.
            fields.setdefault(key, set()).add(key)
        else:
            fields.setdefault(key, set()).update(_operators(value))


def _operators(value: Any) -> set[str]:
    """Operators applied to one path: an operator document's keys, ``$regex`` for a pattern,
    ``$eq`` for a plain value (a sub-document without operators is an equality on the whole)."""
    if isinstance(value, Mapping) and value and all(isinstance(k, str) and k.startswith("$") for k in value):
        return set(value) - {"$options"}  # $options only qualifies $regex
    if isinstance(value, (re.Pattern, Regex)):
        return {"$regex"}
    return {"$eq"}


def sort_of(spec: Any) -> Sort:
    """A sort document as ``((path, direction), ...)``; ``$meta`` sorts become direction 0,
    which no index key matches."""
    if not spec:
        return ()
    pairs = spec.items() if isinstance(spec, Mapping) else spec
    return tuple((str(path), direction if direction in (1, -1) else 0) for path, direction in pairs)


@dataclass(frozen=True)
class QueryShape:
    """One kind of query the library sends: where, how, on which fields, sorted how."""

    collection: str
    command: str
    predicate: Predicate
    sort: Sort = ()
    distinct: str | None = None  # the key of a distinct command
    single: bool = False         # a find limited to one document

    @property
    def unfiltered(self) -> bool:
        return self.predicate.empty and not self.sort and self.distinct is None

    def render_command(self) -> str:
        if self.distinct is not None:
            return f"distinct({self.distinct})"
        return f"{self.command} (limit 1)" if self.single else self.command

    def render_sort(self) -> str:
        return ", ".join(f"{path}: {direction}" for path, direction in self.sort) or "-"

    def to_data(self) -> dict[str, Any]:
        return {"collection": self.collection, "command": self.command,
                "predicate": self.predicate.to_data(), "sort": [list(pair) for pair in self.sort],
                "distinct": self.distinct, "single": self.single}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> QueryShape:
        return cls(data["collection"], data["command"], Predicate.from_data(data["predicate"]),
                   tuple((str(path), int(direction)) for path, direction in data["sort"]),
                   data["distinct"], bool(data["single"]))


def shapes_of_command(name: str, command: Mapping[str, Any]) -> list[QueryShape]:
    """The query shapes in one command document as pymongo sends it (empty if none)."""
    collection = command.get(name)
    if not isinstance(collection, str):  # e.g. {"aggregate": 1}: database-level, no collection
        return []
    if name == "find":
        limit = command.get("limit")
        single = limit is not None and abs(int(limit)) == 1
        return [QueryShape(collection, name, predicate_of(command.get("filter")), sort_of(command.get("sort")),
                           single=single)]
    if name == "count":
        return [QueryShape(collection, name, predicate_of(command.get("query")))]
    if name == "distinct":
        return [QueryShape(collection, name, predicate_of(command.get("query")), distinct=str(command["key"]))]
    if name == "findAndModify":
        return [QueryShape(collection, name, predicate_of(command.get("query")), sort_of(command.get("sort")))]
    if name in ("update", "delete"):
        statements = command.get("updates" if name == "update" else "deletes") or []
        return [QueryShape(collection, name, predicate_of(statement.get("q")), sort_of(statement.get("sort")))
                for statement in statements]
    if name == "aggregate":
        return _aggregate_shapes(collection, command.get("pipeline") or [])
    return []


def _aggregate_shapes(collection: str, pipeline: Sequence[Mapping[str, Any]]) -> list[QueryShape]:
    """Only the leading $match and $sort stages can use an index; the planner moves a $match
    that follows a leading $sort in front of it, so both orders count."""
    if pipeline and "$changeStream" in pipeline[0]:
        return []  # a change stream reads the oplog, not the collection
    matches: list[Mapping[str, Any]] = []
    sort: Sort = ()
    for stage in pipeline:
        if "$match" in stage:
            matches.append(stage["$match"])
        elif "$sort" in stage and not sort:
            sort = sort_of(stage["$sort"])
        else:
            break
    predicate = predicate_of({"$and": matches} if matches else {})
    return [QueryShape(collection, "aggregate", predicate, sort)]


# -- indexes and the rule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexSpec:
    """An index as far as the rule cares: its keys, and which paths a query must constrain
    for the index to be usable at all (partial and sparse indexes leave documents out)."""

    name: str
    key: tuple[tuple[str, Any], ...]
    requires: frozenset[str] = frozenset()

    def render(self) -> str:
        return "{" + ", ".join(f"{path}: {direction}" for path, direction in self.key) + "}"


ID_INDEX = IndexSpec("_id_", (("_id", 1),))


def index_specs(information: Mapping[str, Mapping[str, Any]]) -> list[IndexSpec]:
    """IndexSpecs from ``Collection.index_information()``."""
    specs = []
    for name, info in information.items():
        key = tuple((str(path), direction) for path, direction in info["key"])
        requires: frozenset[str] = frozenset()
        if info.get("partialFilterExpression"):
            # Documents outside the partial filter are not in the index: only a query that
            # constrains the same paths can rely on it (the shape has no values to compare, so
            # constraining the paths is the approximation).
            requires = predicate_of(info["partialFilterExpression"]).paths()
        elif info.get("sparse"):
            requires = frozenset({key[0][0]})  # documents missing the field are not in it
        specs.append(IndexSpec(name, key, requires))
    return specs


def _direction_sign(direction: Any) -> int:
    """+1 / -1 for an ordered key, 0 for hashed, text, 2dsphere... (no order to sort or range by)."""
    if isinstance(direction, (int, float)) and not isinstance(direction, bool) and direction:
        return 1 if direction > 0 else -1
    return 0


def index_serves(index: IndexSpec, equality: frozenset[str], sort: Sort, ranges: frozenset[str]) -> bool:
    """The ESR rule: equality paths first (any order), then the sort in order (all directions
    equal or all reversed), then the range paths (any order); trailing keys do not matter.

    A sort path that is also an equality path is already sorted (one value) and drops out; a
    range path that is also sorted on is served by its sort position.
    """
    if not index.requires <= equality | ranges:
        return False
    sort = tuple((path, direction) for path, direction in sort if path not in equality)
    ranges = ranges - equality - {path for path, _ in sort}
    key = index.key
    if len(key) < len(equality) + len(sort) + len(ranges):
        return False
    head = key[:len(equality)]
    if {path for path, _ in head} != equality:
        return False
    if any(_direction_sign(direction) == 0 and direction != "hashed" for _, direction in head):
        return False  # only hashed among the unordered kinds answers a plain equality
    middle = key[len(equality):len(equality) + len(sort)]
    if [path for path, _ in middle] != [path for path, _ in sort]:
        return False
    signs = {_direction_sign(kd) * sd for (_, kd), (_, sd) in zip(middle, sort)}
    if signs and signs not in ({1}, {-1}):
        return False
    tail = key[len(equality) + len(sort):len(equality) + len(sort) + len(ranges)]
    return {path for path, _ in tail} == ranges and all(_direction_sign(d) != 0 for _, d in tail)


def _conjunctions(predicate: Predicate) -> Iterator[Predicate]:
    """The $or-free predicates that must each be served: the predicate itself when it has no
    $or; else, for each $or group, each branch joined with the fields outside the $or."""
    if not predicate.ors:
        yield predicate
        return
    outer = Predicate(predicate.fields)
    for group in predicate.ors:
        for branch in group:
            yield from _conjunctions(outer.merged(branch))


def user_paths(shape: QueryShape, indexes: Sequence[IndexSpec]) -> frozenset[str]:
    """The user's own keyword fields in ``shape``: paths outside ``_hub`` that no index of the
    collection contains. TensorLayer's model lets users filter and sort on any keyword they stored
    (``test_accuracy``, ``split``...); no fixed index can serve those, so they are filters applied
    after the hub's part of the query (project, name, status...) has been narrowed by an index.
    Every path the hub knows — anything under ``_hub`` or in any hub index — must still be served."""
    return frozenset(path for path in unindexed_paths(shape, indexes) if not path.startswith(("_hub.", "$")))


def hub_part(shape: QueryShape, indexes: Sequence[IndexSpec]) -> QueryShape:
    """``shape`` without its user fields: their filters drop out, and the sort is cut at the
    first user field (from there on the server sorts the narrowed set in memory)."""
    user = user_paths(shape, indexes)
    if not user:
        return shape

    def strip(predicate: Predicate) -> Predicate:
        fields = {path: ops for path, ops in predicate.fields if path not in user}
        return _make_predicate(fields, [[strip(b) for b in group] for group in predicate.ors])

    sort: list[tuple[str, int]] = []
    for path, direction in shape.sort:
        if path in user:
            break
        sort.append((path, direction))
    return QueryShape(shape.collection, shape.command, strip(shape.predicate), tuple(sort), shape.distinct,
                      shape.single)


def shape_served(shape: QueryShape, indexes: Sequence[IndexSpec], user_fields: bool = False) -> bool:
    """True when ``indexes`` (one collection's) serve every part of ``shape``.

    With ``user_fields`` (how the session check runs), only the part the hub owns must be served
    (see :func:`user_paths`); a query that filters on user fields alone is a scan, never served."""
    if "_id" in shape.predicate.equality:
        return True  # at most one document, through the _id index every collection has
    if shape.unfiltered:
        kind = f"{shape.command}:single" if shape.single else shape.command
        return kind in UNFILTERED_ALLOWED
    if user_fields:
        shape = hub_part(shape, indexes)
        if shape.unfiltered:
            return False  # only user fields: nothing narrows it
    sort = shape.sort if shape.distinct is None else ((shape.distinct, 1),)
    for conjunction in _conjunctions(shape.predicate):
        if "_id" in conjunction.equality:
            continue
        if not any(index_serves(index, conjunction.equality, sort, conjunction.ranges) for index in indexes):
            return False
    return True


# -- recording ---------------------------------------------------------------------------------------


@dataclass
class Sighting:
    """Where a shape was first seen, and how often."""

    test: str
    sender: str
    count: int = 1


@dataclass
class Recorder(monitoring.CommandListener):
    """The global command listener: keeps the shapes of the library's query commands."""

    active: bool = False
    current_test: str = "(outside any test)"
    seen: dict[QueryShape, Sighting] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.active or event.command_name not in QUERY_COMMANDS:
            return
        if event.database_name in SYSTEM_DATABASES:
            return
        sender = library_sender()
        if sender is None:
            return  # a fixture's or a test's own command
        try:
            shapes = shapes_of_command(event.command_name, event.command)
        except Exception as error:  # a command this parser does not know must not break a test
            shapes = [QueryShape(str(event.command.get(event.command_name)), event.command_name,
                                 Predicate((("(unparsed: " + type(error).__name__ + ")", ("?",)),)))]
        with self.lock:
            for shape in shapes:
                self.add(shape, Sighting(self.current_test, sender))

    def add(self, shape: QueryShape, sighting: Sighting) -> None:
        known = self.seen.get(shape)
        if known is None:
            self.seen[shape] = sighting
        else:
            known.count += sighting.count

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def to_data(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"shape": shape.to_data(), "test": s.test, "sender": s.sender, "count": s.count}
                    for shape, s in self.seen.items()]

    def merge_data(self, data: Iterable[Mapping[str, Any]]) -> None:
        with self.lock:
            for item in data:
                self.add(QueryShape.from_data(item["shape"]),
                         Sighting(item["test"], item["sender"], int(item["count"])))


def library_sender() -> str | None:
    """``module:line (function)`` of the library frame that sent the current command, or None
    when the nearest frame outside pymongo and the standard library is not the library's."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        top = module.partition(".")[0]
        if module == __name__ or top in _TRANSPARENT_PACKAGES:
            frame = frame.f_back
            continue
        if top == LIBRARY_PACKAGE:
            code = frame.f_code  # co_qualname (3.11+) names the method around a comprehension
            return f"{module}:{frame.f_lineno} ({getattr(code, 'co_qualname', code.co_name)})"
        return None
    return None


# -- the check ---------------------------------------------------------------------------------------


def hub_indexes() -> dict[str, list[IndexSpec]]:
    """Every collection's indexes as a fresh embedded hub creates them."""
    from tensorhub import TensorHub  # at the end of the session, not at import: see conftest.py

    name = f"index_coverage_{secrets.token_hex(4)}"
    hub = TensorHub(f"mongomock://localhost/{name}", project_name="x")
    try:
        return {collection: index_specs(hub.db[collection].index_information())
                for collection in hub.db.list_collection_names()}
    finally:
        hub.db.client.drop_database(name)
        hub.close()


def uncovered(seen: Mapping[QueryShape, Sighting], indexes: Mapping[str, Sequence[IndexSpec]],
              user_fields: bool = False) -> list[tuple[QueryShape, Sighting]]:
    """The shapes no index of their collection serves, in a stable order."""
    missing = [(shape, sighting) for shape, sighting in seen.items()
               if not shape_served(shape, indexes.get(shape.collection) or [ID_INDEX], user_fields)]
    return sorted(missing, key=lambda item: (item[0].collection, item[0].command, item[0].predicate.render(),
                                             item[0].render_sort()))


def suggested_indexes(shape: QueryShape, indexes: Sequence[IndexSpec], user_fields: bool = False) -> list[IndexSpec]:
    """Indexes by the ESR rule that would serve the parts of ``shape`` that ``indexes`` do not
    (one per unserved $or branch). Equality paths start in the order of the existing index that
    leads with the most of them (so the suggestion often just extends that index), the rest
    follow in the order the existing indexes give them (a path that leads an index leads here
    too), then by name."""
    rank: dict[str, int] = {}
    for spec in indexes:
        for position, (path, _) in enumerate(spec.key):
            rank[path] = min(rank.get(path, position), position)

    def order(path: str) -> tuple[int, str]:
        return rank.get(path, len(rank) + 1_000), path

    def equality_order(equality: frozenset[str]) -> list[str]:
        leads: list[str] = []
        for spec in indexes:
            run: list[str] = []
            for path, _ in spec.key:
                if path not in equality:
                    break
                run.append(path)
            if len(run) > len(leads):
                leads = run
        return leads + sorted(equality - set(leads), key=order)

    if shape.unfiltered:
        return []  # nothing to index: the query itself needs a filter
    if user_fields:
        shape = hub_part(shape, indexes)
    sort = shape.sort if shape.distinct is None else ((shape.distinct, 1),)
    suggestions: list[IndexSpec] = []
    for conjunction in _conjunctions(shape.predicate):
        equality, ranges = conjunction.equality, conjunction.ranges
        if "_id" in equality or any(index_serves(spec, equality, sort, ranges) for spec in indexes):
            continue
        kept_sort = tuple((path, direction) for path, direction in sort if path not in equality)
        key = [(path, 1) for path in equality_order(equality)] + list(kept_sort)
        key += [(path, 1) for path in sorted(ranges - equality - {p for p, _ in kept_sort}, key=order)]
        spec = IndexSpec("suggested", tuple(key))
        if spec not in suggestions:
            suggestions.append(spec)
    return suggestions


def unindexed_paths(shape: QueryShape, indexes: Sequence[IndexSpec]) -> list[str]:
    """Paths the shape uses that no index of its collection contains at all (often a user's
    own query fields, which no fixed index can cover)."""
    indexed = {path for spec in indexes for path, _ in spec.key}
    used = set(shape.predicate.paths()) | {path for path, _ in shape.sort}
    if shape.distinct is not None:
        used.add(shape.distinct)
    return sorted(used - indexed)


def render_table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


# -- pytest hooks ------------------------------------------------------------------------------------

_recorder = Recorder()
_registered = False


@dataclass
class _Result:
    checked: int = 0
    missing: list[tuple[QueryShape, Sighting]] = field(default_factory=list)
    indexes: dict[str, list[IndexSpec]] = field(default_factory=dict)
    error: str | None = None


_result: _Result | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(_OPTION, choices=("fail", "report", "off"), default="fail",
                     help="check that an index serves every query the library sends on a real server: "
                          "fail the run (default), only report, or off")


def pytest_configure(config: pytest.Config) -> None:
    global _registered
    if config.getoption(_OPTION) == "off":
        return
    if not _registered:  # pymongo keeps global listeners for the life of the process
        monitoring.register(_recorder)
        _registered = True
    _recorder.active = True


def pytest_unconfigure(config: pytest.Config) -> None:
    _recorder.active = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Name the running test (setup, call and teardown) as the sender's context."""
    _recorder.current_test = item.nodeid
    try:
        return (yield)
    finally:
        _recorder.current_test = "(outside any test)"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist, on the controller: take over what a finished worker recorded."""
    output = getattr(node, "workeroutput", None) or {}
    if _WORKER_OUTPUT_KEY in output:
        _recorder.merge_data(json.loads(output[_WORKER_OUTPUT_KEY]))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _result
    config = session.config
    mode = config.getoption(_OPTION)
    if mode == "off":
        return
    if hasattr(config, "workerinput"):  # an xdist worker: the controller checks the union
        config.workeroutput[_WORKER_OUTPUT_KEY] = json.dumps(_recorder.to_data())  # type: ignore[attr-defined]
        return
    with _recorder.lock:
        seen = dict(_recorder.seen)
    _result = _Result(checked=len(seen))
    if not seen:
        return
    try:
        _result.indexes = hub_indexes()
    except Exception as error:  # the library mid-change: say so, and do not pass silently
        _result.error = f"could not build the hub's indexes: {type(error).__name__}: {error}"
    else:
        # The session judges the hub's part of each query: users' own keyword fields ride on it.
        _result.missing = uncovered(seen, _result.indexes, user_fields=True)
    if mode == "fail" and (_result.missing or _result.error) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    result = _result
    if result is None:
        return
    write = terminalreporter.write_line
    if result.checked == 0:
        write("index coverage: no library query reached a real server in this run (mongomock only?); nothing checked")
        return
    terminalreporter.section("index coverage")
    if result.error:
        write(f"index coverage: {result.error}", red=True, bold=True)
        return
    n_indexes = sum(len(specs) for specs in result.indexes.values())
    if not result.missing:
        write(f"index coverage: all {result.checked} query shapes the library sent are served by "
              f"the {n_indexes} indexes the hub creates", green=True)
        return
    rows = [("collection", "command", "filter shape", "sort", "would be served by", "in no index",
             "first seen in", "sent from", "times")]
    for shape, sighting in result.missing:
        specs = result.indexes.get(shape.collection) or [ID_INDEX]
        rows.append((shape.collection, shape.render_command(), shape.predicate.render(), shape.render_sort(),
                     " + ".join(spec.render() for spec in suggested_indexes(shape, specs, user_fields=True)) or "(needs a filter)",
                     ", ".join(unindexed_paths(shape, specs)) or "-",
                     sighting.test, sighting.sender, str(sighting.count)))
    for line in render_table(rows):
        write(line)
    write("")
    write("indexes the hub creates:")
    for collection in sorted(result.indexes):
        write(f"  {collection}: " + ", ".join(spec.render() for spec in result.indexes[collection]))
    verdict = "FAILED" if config.getoption(_OPTION) == "fail" else "report only"
    write(f"index coverage {verdict}: {len(result.missing)} of {result.checked} query shapes the library "
          "sent are served by no index the hub creates (rule: tests/index_coverage.py)", red=True, bold=True)
