"""The rule of the index-coverage check (tests/index_coverage.py), on hand-written shapes and indexes."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from index_coverage import (
    ID_INDEX,
    IndexSpec,
    Predicate,
    QueryShape,
    Recorder,
    hub_indexes,
    index_specs,
    predicate_of,
    shape_served,
    shapes_of_command,
    suggested_indexes,
    uncovered,
    unindexed_paths,
)
from pymongo import monitoring

pytest_plugins = ["pytester"]  # the end-to-end tests below run pytest on a small suite


def index(*key: tuple[str, Any], requires: frozenset[str] = frozenset()) -> IndexSpec:
    return IndexSpec("_".join(f"{path}_{direction}" for path, direction in key), key, requires)


def find(filter_: dict[str, Any] | None = None, sort: list[tuple[str, int]] | None = None,
         collection: str = "c", **extra: Any) -> QueryShape:
    """The shape of a find command as pymongo sends it."""
    command: dict[str, Any] = {"find": collection, "filter": filter_ or {}, **extra}
    if sort:
        command["sort"] = dict(sort)
    [shape] = shapes_of_command("find", command)
    return shape


def served(shape: QueryShape, *indexes: IndexSpec) -> bool:
    return shape_served(shape, [ID_INDEX, *indexes])


# -- the ESR rule --------------------------------------------------------------------------------

PROJECT_NAME_VERSION = index(("project", 1), ("name", 1), ("version", 1))


@pytest.mark.parametrize("filter_", [
    {"project": "p", "name": "n"},
    {"name": "n", "project": "p"},                     # equality fields in any order
    {"project": "p"},                                   # a prefix is enough
    {"project": "p", "name": {"$in": ["a", "b"]}},      # $in counts as equality
    {"project": "p", "name": {"$eq": "n"}},
    {"project": "p", "name": "n", "version": {"$gte": 2, "$lt": 5}},  # range after the equalities
    {"$and": [{"project": "p"}, {"name": "n"}]},
])
def test_equality_prefix_served(filter_: dict[str, Any]) -> None:
    assert served(find(filter_), PROJECT_NAME_VERSION)


@pytest.mark.parametrize("filter_", [
    {"name": "n"},                                      # skips the index's first key
    {"project": "p", "version": 3},                     # a gap: name is not bound
    {"project": "p", "name": "n", "accuracy": 0.9},     # a field the index does not have
    {"project": "p", "name": {"$gt": "m"}, "version": 1},  # range before an equality
    {"project": "p", "name": {"$ne": "n"}, "version": 1},  # $ne is no equality
])
def test_equality_prefix_not_served(filter_: dict[str, Any]) -> None:
    assert not served(find(filter_), PROJECT_NAME_VERSION)


def test_sort_follows_the_equalities_in_order_and_direction() -> None:
    newest = find({"project": "p", "name": "n"}, [("version", -1)])
    assert served(newest, PROJECT_NAME_VERSION)  # all directions reversed: the index read backwards
    assert served(find({"project": "p"}, [("name", 1), ("version", 1)]), PROJECT_NAME_VERSION)
    assert served(find({"project": "p"}, [("name", -1), ("version", -1)]), PROJECT_NAME_VERSION)
    assert not served(find({"project": "p"}, [("name", 1), ("version", -1)]), PROJECT_NAME_VERSION)
    assert not served(find({"project": "p"}, [("version", 1), ("name", 1)]), PROJECT_NAME_VERSION)
    assert not served(find({"project": "p"}, [("version", 1)]), PROJECT_NAME_VERSION)  # name in between
    mixed = index(("project", 1), ("priority", -1), ("created_at", 1))
    assert served(find({"project": "p"}, [("priority", -1), ("created_at", 1)]), mixed)
    assert served(find({"project": "p"}, [("priority", 1), ("created_at", -1)]), mixed)
    assert not served(find({"project": "p"}, [("priority", -1), ("created_at", -1)]), mixed)


def test_a_tie_breaking_sort_key_must_be_in_the_index_too() -> None:
    shape = find({"project": "p"}, [("created_at", 1), ("_id", 1)])
    assert not served(shape, index(("project", 1), ("created_at", 1)))
    assert served(shape, index(("project", 1), ("created_at", 1), ("_id", 1)))


def test_sorting_on_an_equality_field_needs_no_index_position() -> None:
    assert served(find({"project": "p", "name": "n"}, [("name", 1), ("version", -1)]), PROJECT_NAME_VERSION)


def test_ranges_come_after_the_sort() -> None:
    shape = find({"project": "p", "version": {"$gt": 1}}, [("created_at", -1)])
    assert served(shape, index(("project", 1), ("created_at", -1), ("version", 1)))
    assert not served(shape, index(("project", 1), ("version", 1), ("created_at", -1)))
    # A range on the sorted field is served by the sort position.
    sorted_range = find({"project": "p", "version": {"$lt": 9}}, [("version", -1)])
    assert not served(sorted_range, PROJECT_NAME_VERSION)  # name sits between project and version
    assert served(sorted_range, index(("project", 1), ("version", 1)))


def test_trailing_keys_are_fine_and_missing_ones_are_not() -> None:
    long = index(("project", 1), ("status", 1), ("priority", -1), ("created_at", 1), ("_id", 1))
    assert served(find({"status": "pending", "project": "p"}), long)
    assert not served(find({"project": "p", "status": "pending", "gpu": 1}), long)


def test_dotted_paths_are_fields_of_their_own() -> None:
    shape = find({"_hub.project": "p", "_hub.name": "n"}, [("_hub.version", -1)])
    assert served(shape, index(("_hub.project", 1), ("_hub.name", 1), ("_hub.version", 1)))
    assert not served(shape, index(("_hub", 1)))
    # A sub-document value is one equality on the whole sub-document, not on its fields.
    whole = find({"lease": {"token": "t"}})
    assert whole.predicate.render() == "{lease: $eq}"
    assert served(whole, index(("lease", 1))) and not served(whole, index(("lease.token", 1)))


def test_every_or_branch_needs_an_index_with_the_fields_outside_the_or() -> None:
    shape = find({"project": "p", "$or": [{"name": "n"}, {"status": "s"}]})
    by_name = index(("project", 1), ("name", 1))
    by_status = index(("project", 1), ("status", 1))
    assert not served(shape, by_name)
    assert not served(shape, by_status)
    assert served(shape, by_name, by_status)
    # A branch on _id is served by the _id index.
    assert served(find({"project": "p", "$or": [{"_id": 1}, {"name": "n"}]}), by_name)
    # Nested: {a, $or: [{b, $or: [{c}, {d}]}, {e}]}
    nested = find({"a": 1, "$or": [{"b": 1, "$or": [{"c": 1}, {"d": 1}]}, {"e": 1}]})
    ab_c, ab_d, a_e = index(("a", 1), ("b", 1), ("c", 1)), index(("a", 1), ("b", 1), ("d", 1)), index(("a", 1), ("e", 1))
    assert served(nested, ab_c, ab_d, a_e)
    assert not served(nested, ab_c, a_e)


def test_id_equality_is_always_served() -> None:
    assert shape_served(find({"_id": ObjectId(), "status": "x", "$expr": {}}), [])
    assert served(find({"_id": {"$in": [1, 2]}}))
    assert not served(find({"_id": {"$lt": ObjectId()}, "metadata.project": "p"}))
    assert served(find({"metadata.project": "p", "_id": {"$lt": 1}}), index(("metadata.project", 1), ("_id", 1)))


def test_operators_no_index_key_can_serve() -> None:
    assert not served(find({"project": "p", "$expr": {"$gt": ["$a", "$b"]}}), index(("project", 1)))
    assert not served(find({"project": "p", "$where": "true"}), index(("project", 1)))


def test_unfiltered_queries_only_from_the_allow_list() -> None:
    assert served(shapes_of_command("count", {"count": "c"})[0])           # estimatedDocumentCount
    assert served(find({}, limit=1))                                       # find_one({})
    assert not served(find({}), index(("a", 1)))                           # a full scan
    assert not served(shapes_of_command("delete", {"delete": "c", "deletes": [{"q": {}, "limit": 0}]})[0])
    assert not served(shapes_of_command("aggregate", {"aggregate": "c", "pipeline": [{"$group": {"_id": 1}}]})[0])
    # No filter but a sort: served by an index on the sort.
    assert served(find({}, [("created_at", -1)]), index(("created_at", 1)))
    assert not served(find({}, [("created_at", -1)]))


def test_distinct_walks_an_index_on_its_key() -> None:
    all_ids = shapes_of_command("distinct", {"distinct": "files", "key": "_id"})[0]
    assert served(all_ids)
    old_chunks = shapes_of_command("distinct", {"distinct": "chunks", "key": "files_id",
                                                "query": {"files_id": {"$lt": ObjectId()}}})[0]
    assert served(old_chunks, index(("files_id", 1), ("n", 1)))
    assert not served(old_chunks, index(("n", 1), ("files_id", 1)))
    by_project = shapes_of_command("distinct", {"distinct": "c", "key": "name", "query": {"project": "p"}})[0]
    assert served(by_project, PROJECT_NAME_VERSION)
    assert not served(by_project, index(("project", 1), ("version", 1)))


def test_partial_sparse_and_unordered_indexes() -> None:
    partial = IndexSpec("p", (("project", 1), ("status", 1)), frozenset({"status"}))
    assert served(find({"project": "p", "status": "pending"}), partial)
    assert not served(find({"project": "p"}), partial)  # documents outside the filter are missing
    hashed = index(("project", "hashed"))
    assert served(find({"project": "p"}), hashed)
    assert not served(find({}, [("project", 1)]), hashed)
    assert not served(find({"project": {"$gt": "a"}}), hashed)
    assert not served(find({"body": "x"}), index(("body", "text")))
    specs = index_specs({
        "_id_": {"key": [("_id", 1)], "v": 2},
        "live": {"key": [("project", 1), ("seq", 1)], "partialFilterExpression": {"status": {"$in": ["a"]}}},
        "gone": {"key": [("deleted_at", 1)], "sparse": True},
    })
    assert [spec.requires for spec in specs] == [frozenset(), frozenset({"status"}), frozenset({"deleted_at"})]


# -- shapes --------------------------------------------------------------------------------------


def test_shapes_keep_fields_and_operators_never_values() -> None:
    a = find({"project": "p", "acc": {"$gt": 0.5}, "name": re.compile("^m")}, [("acc", -1)])
    b = find({"name": re.compile("x"), "acc": {"$gt": 0.99}, "project": "q"}, [("acc", -1)])
    assert a == b and hash(a) == hash(b)
    assert a.predicate.render() == "{acc: $gt, name: $regex, project: $eq}"
    assert find({"project": "p", "acc": {"$lt": 1}}) != a  # another operator, another shape
    assert "0.5" not in json.dumps(a.to_data())


def test_predicate_of_flattens_and_and_marks_negations() -> None:
    assert predicate_of({"$and": [{"a": 1}, {"a": {"$gt": 0}}], "b": {"$exists": True}}).render() == \
        "{a: $eq|$gt, b: $exists}"
    assert predicate_of({"a": 1}).equality == {"a"}
    nor = predicate_of({"project": "p", "$nor": [{"status": "x"}, {"hp.lr": {"$gt": 1}}]})
    assert nor.equality == {"project"} and nor.ranges == {"status", "hp.lr"}
    assert predicate_of({"$or": [{"a": 1}]}) == predicate_of({"a": 1})  # one branch is no $or
    assert predicate_of({"a": 1, "$comment": "why"}) == predicate_of({"a": 2})
    assert predicate_of({"$or": [{"a": 1}, {"b": 1}]}) == predicate_of({"$or": [{"b": 2}, {"a": 3}]})
    # Branches of one shape are one conjunction ({$or: [{a: 1}, {a: 2}]} is a: $in).
    assert predicate_of({"p": 1, "$or": [{"a": 1}, {"a": 2}]}) == predicate_of({"p": 1, "a": 3})


def test_shapes_of_every_query_command() -> None:
    updates = shapes_of_command("update", {"update": "tasks", "updates": [
        {"q": {"_id": 1, "status": "pending", "seq": 3}, "u": {"$set": {"seq": 4}}},
        {"q": {"project": "p"}, "u": {"$set": {"x": 1}}, "multi": True}]})
    assert [s.predicate.render() for s in updates] == ["{_id: $eq, seq: $eq, status: $eq}", "{project: $eq}"]
    [delete] = shapes_of_command("delete", {"delete": "chunks", "deletes": [{"q": {"files_id": {"$in": [1]}}, "limit": 0}]})
    assert (delete.collection, delete.command, delete.predicate.equality) == ("chunks", "delete", frozenset({"files_id"}))
    [fam] = shapes_of_command("findAndModify", {"findAndModify": "tasks", "query": {"project": "p"},
                                                "sort": {"priority": -1}, "remove": True})
    assert fam.sort == (("priority", -1),)
    [count] = shapes_of_command("aggregate", {"aggregate": "blobs.chunks", "pipeline": [
        {"$match": {"files_id": 1}}, {"$group": {"_id": 1, "n": {"$sum": 1}}}], "cursor": {}})
    assert count.predicate.render() == "{files_id: $eq}" and count.sort == ()
    [sorted_agg] = shapes_of_command("aggregate", {"aggregate": "m", "pipeline": [
        {"$sort": {"step": 1}}, {"$match": {"run": "r"}}, {"$match": {"step": {"$gt": 1}}},
        {"$limit": 3}, {"$match": {"late": 1}}]})
    assert sorted_agg.predicate.render() == "{run: $eq, step: $gt}" and sorted_agg.sort == (("step", 1),)
    assert shapes_of_command("aggregate", {"aggregate": "t", "pipeline": [{"$changeStream": {}}]}) == []
    assert shapes_of_command("aggregate", {"aggregate": 1, "pipeline": [{"$currentOp": {}}]}) == []
    assert shapes_of_command("insert", {"insert": "t", "documents": [{}]}) == []
    [one] = shapes_of_command("find", {"find": "t", "filter": {}, "limit": 1, "singleBatch": True})
    assert one.single and one.render_command() == "find (limit 1)"


# -- recording -----------------------------------------------------------------------------------


def _event(command: dict[str, Any], database: str = "th_1") -> monitoring.CommandStartedEvent:
    return monitoring.CommandStartedEvent(command, database, 1, ("127.0.0.1", 27017), 1)


def _send_from(module: str, recorder: Recorder, event: monitoring.CommandStartedEvent) -> None:
    """Call the listener from a frame that belongs to ``module`` (as pymongo would, synchronously)."""
    code = compile("def send(recorder, event):\n    recorder.started(event)\n", f"<{module}>", "exec")
    namespace: dict[str, Any] = {"__name__": module}
    exec(code, namespace)
    namespace["send"](recorder, event)


def test_only_the_library_s_own_queries_are_recorded() -> None:
    recorder = Recorder(active=True, current_test="tests/test_x.py::test_y")
    library_find = _event({"find": "tasks", "filter": {"project": "p"}})
    _send_from("tensorhub.tasks.queue", recorder, library_find)
    _send_from("tensorhub.tasks.queue", recorder, _event({"find": "tasks", "filter": {"project": "q"}}))
    _send_from("test_blobs", recorder, _event({"find": "blobs.files", "filter": {"x": 1}}))  # hub.db[...] in a test
    _send_from("conftest", recorder, _event({"find": "t", "filter": {"y": 1}}))
    _send_from("tensorhub.hub", recorder, _event({"find": "t", "filter": {"z": 1}}, database="admin"))
    _send_from("tensorhub.hub", recorder, _event({"createIndexes": "t", "indexes": []}))
    [(shape, sighting)] = recorder.seen.items()
    assert shape.predicate.render() == "{project: $eq}"
    assert sighting.test == "tests/test_x.py::test_y" and sighting.count == 2
    assert sighting.sender.startswith("tensorhub.tasks.queue:") and "(send)" in sighting.sender
    recorder.active = False
    _send_from("tensorhub.tasks.queue", recorder, _event({"find": "tasks", "filter": {"other": 1}}))
    assert len(recorder.seen) == 1


def test_recordings_travel_between_xdist_processes() -> None:
    worker = Recorder(active=True, current_test="a")
    _send_from("tensorhub.records", worker, _event({"find": "models", "filter": {
        "project": "p", "$or": [{"a": 1}, {"b": {"$in": [1]}}]}, "sort": {"acc": -1}}))
    _send_from("tensorhub.blobs", worker, _event({"distinct": "blobs.files", "key": "_id"}))
    controller = Recorder()
    controller.merge_data(json.loads(json.dumps(worker.to_data())))
    controller.merge_data(json.loads(json.dumps(worker.to_data())))
    assert set(controller.seen) == set(worker.seen)
    assert all(s.count == 2 and s.test == "a" for s in controller.seen.values())


def test_uncovered_lists_what_no_index_serves() -> None:
    recorder = Recorder(active=True, current_test="t")
    for command in ({"find": "models", "filter": {"project": "p", "name": "n"}, "sort": {"version": -1}},
                    {"find": "models", "filter": {"project": "p", "acc": {"$gt": 1}}},
                    {"find": "unknown", "filter": {"_id": 1}},
                    {"find": "unknown", "filter": {"k": 1}}):
        _send_from("tensorhub.records", recorder, _event(command))
    missing = uncovered(recorder.seen, {"models": [ID_INDEX, PROJECT_NAME_VERSION]})
    assert [(s.collection, s.predicate.render()) for s, _ in missing] == [
        ("models", "{acc: $gt, project: $eq}"), ("unknown", "{k: $eq}")]


def test_the_hub_s_indexes_are_read_from_the_library() -> None:
    indexes = hub_indexes()
    assert indexes, "a fresh hub creates no collection with indexes"
    for collection, specs in indexes.items():
        assert ID_INDEX.key in [spec.key for spec in specs], collection


def test_predicate_round_trip() -> None:
    predicate = predicate_of({"a": 1, "$or": [{"b": {"$gt": 1}}, {"c": 1, "$or": [{"d": 1}, {"e": 1}]}]})
    assert Predicate.from_data(json.loads(json.dumps(predicate.to_data()))) == predicate


def test_suggestions_follow_the_esr_rule_and_the_existing_key_order() -> None:
    existing = [ID_INDEX, index(("project", 1), ("created_at", -1))]
    shape = find({"name": "n", "project": "p", "acc": {"$gt": 0.5}}, [("created_at", -1), ("_id", -1)])
    [suggestion] = suggested_indexes(shape, existing)
    assert suggestion.key == (("project", 1), ("name", 1), ("created_at", -1), ("_id", -1), ("acc", 1))
    assert served(shape, suggestion)
    assert unindexed_paths(shape, existing) == ["acc", "name"]
    branches = find({"project": "p", "$or": [{"a": 1}, {"b": 1}]})
    assert [s.key for s in suggested_indexes(branches, [ID_INDEX, index(("project", 1), ("a", 1))])] == [
        (("project", 1), ("b", 1))]
    assert suggested_indexes(find({}), existing) == []
    # An index that leads with the equality paths is extended rather than reordered.
    claims = [ID_INDEX, index(("project", 1), ("name", 1), ("status", 1), ("priority", -1))]
    [extended] = suggested_indexes(find({"status": "s", "name": "n", "project": "p"},
                                        [("priority", -1), ("_id", -1)]), claims)
    assert extended.key == (("project", 1), ("name", 1), ("status", 1), ("priority", -1), ("_id", -1))
    assert suggested_indexes(find({"project": "p"}), existing) == []  # already served


# -- the plugin end to end -----------------------------------------------------------------------

INNER_SUITE = """
import index_coverage
from pymongo import monitoring


def send(command):
    # As pymongo would on a real server: the listener called from a frame of the library.
    event = monitoring.CommandStartedEvent(command, "th_inner", 1, ("127.0.0.1", 27017), 1)
    namespace = {"__name__": "tensorhub.inner"}
    exec("def go(recorder, event):\\n    recorder.started(event)\\n", namespace)
    namespace["go"](index_coverage._recorder, event)


def test_sends():
    send({"find": "inner_collection", "filter": {"_id": 1}})
    send(%r)
"""


def _run_inner(pytester: pytest.Pytester, command: dict[str, Any], *args: str) -> pytest.RunResult:
    # The inner pytest runs in a subprocess (the plugin's listener and state are per process).
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                          'pytest_plugins = ["index_coverage"]\n')
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_SUITE % (command,)))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_a_run_that_sent_an_unserved_query_fails_with_a_table(pytester: pytest.Pytester) -> None:
    result = _run_inner(pytester, {"find": "inner_collection", "filter": {"unindexed": 1}})
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        # only a user field: nothing the hub owns narrows it, so no index can help
        "*inner_collection*find*{unindexed: $eq}*(needs a filter)*unindexed*test_inner.py::test_sends*"
        "tensorhub.inner:2 (go)*1",
        "index coverage FAILED: 1 of 2 query shapes *",
    ])


def test_report_mode_keeps_the_exit_status(pytester: pytest.Pytester) -> None:
    result = _run_inner(pytester, {"find": "inner_collection", "filter": {"unindexed": 1}},
                        "--index-coverage=report")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["index coverage report only: 1 of 2 *"])


def test_a_run_whose_queries_are_all_served_passes(pytester: pytest.Pytester) -> None:
    result = _run_inner(pytester, {"count": "inner_collection"})
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["index coverage: all 2 query shapes the library sent are served *"])


def test_user_fields_ride_on_an_indexed_hub_part() -> None:
    """TensorLayer-style queries on users' own keywords are served when the hub's part is."""
    indexes = [IndexSpec("p_name_created", (("_hub.project", 1), ("model_name", 1), ("_hub.created_at", -1),
                                            ("_id", -1)))]
    best = QueryShape("models", "find", predicate_of({"_hub.project": "p", "model_name": "mlp",
                                                       "accuracy": {"$gt": 0.5}}),
                      (("test_accuracy", -1), ("_id", -1)))
    assert not shape_served(best, indexes)                  # strict: test_accuracy is in no index
    assert shape_served(best, indexes, user_fields=True)    # narrowed by (project, model_name), sorted in memory
    only_user = QueryShape("models", "find", predicate_of({"accuracy": 0.5}))
    assert not shape_served(only_user, indexes, user_fields=True)  # nothing the hub owns narrows it: a scan
    hub_field = QueryShape("models", "find", predicate_of({"_hub.project": "p", "_hub.sha256": "x"}))
    assert not shape_served(hub_field, indexes, user_fields=True)  # a _hub path is never a user field
    expr = QueryShape("models", "find", predicate_of({"_hub.project": "p", "$expr": {"$gt": ["$a", 1]}}))
    assert not shape_served(expr, indexes, user_fields=True)       # nor an operator no index can serve
    newest = QueryShape("models", "find", predicate_of({"_hub.project": "p", "model_name": "mlp"}),
                        (("_hub.created_at", -1), ("_id", -1)))
    assert shape_served(newest, indexes, user_fields=True)
