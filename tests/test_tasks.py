"""The task queue from the distributor's side, run in-process (the TensorLayer loop)."""
from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import numpy as np
import pytest

from tensorhub.errors import InvalidArgument, ReservedField, TaskError
from tensorhub.tasks.claims import Outcome

SCRIPT = "accuracy = 1 - 1 / n_units\nloss = 1 / n_units\n"


def test_create_stores_source_and_run_top_task_collects_results(hub, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    task_id = hub.create_task("mnist", script=str(script), hyper_parameters={"n_units": 4},
                              saved_result_keys=["accuracy"], model="mlp")
    script.unlink()  # the task carries its source: the distributor's file is not needed any more
    assert hub.check_unfinished_task("mnist")
    done = hub.run_top_task("mnist")
    assert done["_id"] == task_id and done["status"] == "finished"
    assert done["result"] == {"accuracy": 0.75} and done["attempts"] == 1
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]
    assert done["runner"]["pid"] > 0 and done["model"] == "mlp"
    assert not hub.check_unfinished_task("mnist")
    assert hub.run_top_task("mnist") is None


def test_task_name_filters_everything(hub):
    hub.create_task("a", source=SCRIPT, hyper_parameters={"n_units": 2}, saved_result_keys=["loss"])
    hub.create_task("b", source=SCRIPT, hyper_parameters={"n_units": 4}, saved_result_keys=["loss"])
    assert hub.run_top_task("b")["result"] == {"loss": 0.25}
    assert hub.check_unfinished_task("a") and not hub.check_unfinished_task("b")
    assert [t["task_name"] for t in hub.find_tasks(status="pending")] == ["a"]
    assert hub.task_counts("a")["pending"] == 1


def test_priority_first_then_oldest(hub):
    ids = [hub.create_task("t", source="x = 1", priority=p) for p in (0, 5, 0, 5)]
    order = [hub.run_top_task("t")["_id"] for _ in ids]
    assert order == [ids[1], ids[3], ids[0], ids[2]]


def test_failure_retries_then_fails_with_error_and_traceback(hub):
    task_id = hub.create_task("t", source="raise ValueError('bad lr')", max_attempts=2)
    first = hub.run_top_task("t")
    assert first["status"] == "pending" and first["attempts"] == 1
    assert first["error"]["type"] == "ValueError" and "bad lr" in first["error"]["traceback"]
    final = hub.run_top_task("t")
    assert final["status"] == "failed" and final["attempts"] == 2 and len(final["failures"]) == 2
    assert hub.requeue_tasks("t") == 1
    again = hub.get_task(task_id)
    assert again["status"] == "pending" and again["attempt_limit"] == 4 and again["error"] is None


def test_missing_result_key_and_sys_exit(hub):
    hub.create_task("t", source="a = 1", saved_result_keys=["a", "b"], max_attempts=1)
    assert "b" in hub.run_top_task("t")["error"]["message"]
    hub.create_task("u", source="import sys\nsys.exit(3)", max_attempts=1)
    assert hub.run_top_task("u")["status"] == "failed"
    hub.create_task("v", source="import sys\nx = 5\nsys.exit(0)", saved_result_keys=["x"])
    assert hub.run_top_task("v")["result"] == {"x": 5}


def test_function_tasks_need_pickle_opt_in_to_run(hub):
    def train(n_units, lr=0.1):
        return {"score": n_units * lr}

    hub.create_task("f", function=train, hyper_parameters={"n_units": 10}, saved_result_keys=["score"])
    assert hub.run_top_task("f") is None  # not claimed without allow_pickle
    assert hub.run_top_task("f", allow_pickle=True)["result"] == {"score": 1.0}


def test_grid_and_random_search_counts(hub):
    grid = {"n_units": [100, 200, 400], "lr": [0.1, 0.01]}
    ids = hub.create_grid_tasks("g", source=SCRIPT, grid=grid, hyper_parameters={"epochs": 2})
    assert len(ids) == 6
    params = [t["hyper_parameters"] for t in hub.find_tasks("g")]
    assert {(p["n_units"], p["lr"]) for p in params} == {(n, lr) for n in grid["n_units"] for lr in grid["lr"]}
    assert all(p["epochs"] == 2 for p in params)
    sampled = hub.create_random_tasks("r", source=SCRIPT, grid=grid, n=4, seed=1)
    combos = {tuple(t["hyper_parameters"].items()) for t in hub.find_tasks("r")}
    assert len(sampled) == 4 and len(combos) == 4
    assert len(hub.create_random_tasks("h", source=SCRIPT, grid=grid, fraction=0.5)) == 3
    with pytest.raises(InvalidArgument):
        hub.create_random_tasks("h", source=SCRIPT, grid=grid, n=7)


def test_a_bad_combination_queues_none_of_the_sweep(hub):
    grid = {"n_units": [100, 200, object()]}   # the last one cannot be stored
    with pytest.raises(InvalidArgument):
        hub.create_grid_tasks("g", source=SCRIPT, grid=grid)
    with pytest.raises(ReservedField):
        hub.create_grid_tasks("g", source=SCRIPT, grid={"n_units": [1]}, status="done")
    assert hub.find_tasks() == []

    def train(n_units):
        return {"score": n_units}

    blobs = hub.db["blobs.files"]
    with pytest.raises(InvalidArgument):        # each function task owns its blob: none is left behind
        hub.create_grid_tasks("f", function=train, grid=grid, saved_result_keys="score")
    assert hub.find_tasks() == [] and blobs.count_documents({}) == 0
    ids = hub.create_grid_tasks("f", function=train, grid={"n_units": [1, 2]}, saved_result_keys="score")
    assert blobs.count_documents({}) == 2
    assert hub.delete_tasks("f", hyper_parameters={"n_units": 1}) == 1 and blobs.count_documents({}) == 1
    assert hub.run_top_task("f", allow_pickle=True)["result"] == {"score": 2} and hub.get_task(ids[1])


def test_a_sweep_is_one_insert_and_one_wake_up(server_uri):
    """However many combinations: a runner fleet sees the whole sweep at once, and the distributor
    pays two commands, not two per task (counted with pymongo's command monitoring)."""
    from pymongo import monitoring

    from tensorhub import TensorHub

    seen: list[tuple[str, str]] = []

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            seen.append((event.command_name, str(event.command.get(event.command_name))))

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    hub = TensorHub(server_uri, project_name="test", event_listeners=[Listener()])
    try:
        hub.find_tasks()          # the hub's indexes are made on first use, not counted here
        seen.clear()
        ids = hub.create_grid_tasks("g", source=SCRIPT, grid={"n_units": list(range(1, 201))}, repeat=2)
        assert sorted(seen) == [("insert", "tasks"), ("update", "task_signals")]
        assert len(ids) == 400 and hub.queue.counts("g")["pending"] == 400
        assert {t.hyper_parameters["n_units"] for t in hub.find_tasks("g", repeat=1)} == set(range(1, 201))
    finally:
        hub.close()


def test_cancel_pending_and_delete(hub):
    keep = hub.create_task("t", source="x = 1")
    drop = hub.create_task("t", source="x = 2", group="drop")
    assert hub.cancel_tasks("t", group="drop") == 1
    assert hub.get_task(drop)["status"] == "cancelled"
    assert hub.run_top_task("t")["_id"] == keep
    assert hub.requeue_tasks("t", statuses=["cancelled"]) == 1
    assert hub.run_top_task("t")["_id"] == drop  # a requeued task can still be claimed
    assert hub.delete_tasks("t") == 2 and hub.find_tasks() == []
    assert hub.db["task_claims"].count_documents({}) == 0


def test_bad_arguments_are_clear(hub):
    with pytest.raises(TaskError, match="not a file"):
        hub.create_task("t", script="/nonexistent/train.py")
    with pytest.raises(TaskError, match="does not compile"):
        hub.create_task("t", source="def (")
    with pytest.raises(ReservedField, match="status"):
        hub.create_task("t", source="x=1", status="finished")
    with pytest.raises(InvalidArgument):
        hub.create_task("t", source="x=1", max_attempts=0)
    with pytest.raises(InvalidArgument):
        hub.create_task("", source="x=1")
    assert hub.find_tasks() == []


def test_expired_lease_returns_task_to_pending_then_failed(hub):
    task_id = hub.create_task("t", source="x = 1", max_attempts=2)
    book = hub.queue
    runner = {"id": "dead-runner", "host": "h", "pid": 1, "gpu": None}
    claim = book.claim_next(runner, lease_seconds=30)
    assert book.begin(claim)  # the runner started the code, then died
    assert book.reap_expired() == 0  # lease still valid
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=31)
    assert book.reap_expired(now=later) == 1
    task = hub.get_task(task_id)
    assert task["status"] == "pending" and task["error"]["type"] == "LeaseExpired"
    assert not book.heartbeat(claim)  # the dead runner, if it wakes up, learns it lost
    assert not book.finish(claim, Outcome("finished", result={}))
    claim2 = book.claim_next(runner, lease_seconds=30)
    assert claim2.seq == 2 and claim2.attempt == 2 and book.begin(claim2)
    assert book.reap_expired(now=later + dt.timedelta(seconds=31)) == 1
    assert hub.get_task(task_id)["status"] == "failed"


def test_concurrent_claims_have_one_winner_per_task(hub):
    for i in range(20):
        hub.create_task("t", source="x = 1", hyper_parameters={"i": i})
    won: list = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        from tensorhub import TensorHub
        other = TensorHub(hub.uri, project_name="test")
        runner = {"id": f"r{n}", "host": "h", "pid": n, "gpu": None}
        while (claim := other.queue.claim_next(runner, 30)) is not None:
            with lock:
                won.append(claim.task_id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 20 and len(set(won)) == 20
    assert hub.task_counts()["running"] == 20


def test_a_claimer_that_died_mid_claim_does_not_block_the_task(hub):
    task_id = hub.create_task("t", source="x = 1")
    # A runner inserted the ticket for round 1 and died before updating the task.
    hub.db["task_claims"].insert_one({"_id": f"{task_id}/1", "owner": "dead", "task_id": task_id,
                                      "taken_at": dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)})
    runner = {"id": "live", "host": "h", "pid": 2, "gpu": None}
    assert hub.queue.claim_next(runner, 30) is None  # notices the stale ticket, skips the round
    claim = hub.queue.claim_next(runner, 30)
    assert claim is not None and claim.seq == 2 and claim.attempt == 1
    assert [h["event"] for h in hub.get_task(task_id).history] == ["round_skipped"]


def test_a_runner_in_a_fleet_skips_a_dead_claimers_round_when_it_meets_it_again(hub):
    task_id = hub.create_task("t", source="x = 1")
    hub.db["task_claims"].insert_one({"_id": f"{task_id}/1", "owner": "dead", "task_id": task_id,
                                      "taken_at": dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)})
    runner = {"id": "live", "host": "h", "pid": 2, "gpu": None}
    assert hub.queue.claim_next(runner, 30, spread=True) is None   # lost once: a live claimer, most likely
    assert hub.get_task(task_id).history == []
    assert hub.queue.claim_next(runner, 30, spread=True) is None   # lost again: it looks, and skips the round
    claim = hub.queue.claim_next(runner, 30, spread=True)
    assert claim is not None and claim.seq == 2 and claim.attempt == 1


def test_an_ender_that_died_before_writing_is_completed_by_the_reaper(hub):
    task_id = hub.create_task("t", source="x = 1", max_attempts=3)
    book = hub.queue
    claim = book.claim_next({"id": "r", "host": "h", "pid": 1, "gpu": None}, lease_seconds=5)
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    hub.db["task_claims"].insert_one({"_id": f"{task_id}/{claim.seq}/end", "owner": "gone", "by": "reaper",
                                      "task_id": task_id, "taken_at": old})
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=10)
    assert book.reap_expired(now=later) == 1
    task = hub.get_task(task_id)
    assert task["status"] == "pending" and task["error"]["type"] == "OutcomeLost"


def test_finishing_twice_is_harmless(hub):
    hub.create_task("t", source="x = 1")
    book = hub.queue
    claim = book.claim_next({"id": "r", "host": "h", "pid": 1, "gpu": None}, lease_seconds=30)
    assert book.finish(claim, Outcome("finished", result={"x": 1}))
    # The same runner asking again (its first reply was lost) hears "yes, that landed"...
    assert book.finish(claim, Outcome("finished", result={"x": 1}))
    # ...and a different claim of the same round cannot overwrite it.
    imposter = type(claim)(claim.task, claim.seq, "another-token", claim.runner, claim.lease_seconds)
    assert not book.finish(imposter, Outcome("failed", error={"type": "X", "message": "late"}))
    assert hub.find_tasks()[0]["status"] == "finished"


def test_an_expired_claim_that_never_started_is_a_lost_round_not_an_attempt(hub):
    task_id = hub.create_task("t", source="x = 1", max_attempts=1)
    runner = {"id": "lost-replies", "host": "h", "pid": 1, "gpu": None}
    hub.queue.claim_next(runner, lease_seconds=30)  # claimed, but the runner never confirmed the start
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=31)
    assert hub.queue.reap_expired(now=later) == 1
    task = hub.get_task(task_id)
    assert task.status == "pending" and task.attempts == 0 and task.error is None
    assert task.history[-1]["event"] == "handed_back" and "lost round" in task.history[-1]["reason"]
    done = hub.run_top_task("t")  # with max_attempts=1 it still gets its one real attempt
    assert done.status == "finished" and done.attempts == 1


def test_task_documents_keep_tensorlayer_fields_and_the_hub_out_of_the_way(hub):
    task_id = hub.create_task("mnist", source="acc = 0.5", hyper_parameters={"n_units": 8},
                              saved_result_keys="acc", name="run-a", version="v2", description="d",
                              time="user time")
    doc = hub.db["tasks"].find_one({"_id": task_id})
    assert doc["task_name"] == "mnist" and doc["status"] == "pending" and doc["saved_result_keys"] == ["acc"]
    assert (doc["name"], doc["version"], doc["description"], doc["time"]) == ("run-a", "v2", "d", "user time")
    assert doc["_hub"]["project"] == "test" and doc["_hub"]["attempts"] == 0
    done = hub.run_top_task(name="run-a")
    assert done.result == {"acc": 0.5} and done["result"] == {"acc": 0.5} and done.get("attempts") == 1
    assert done.fields == {"name": "run-a", "version": "v2", "description": "d"}
    assert hub.find_tasks(version="v2")[0].id == task_id


def test_typed_errors_for_bad_task_arguments(hub):
    from tensorhub.errors import InvalidField

    with pytest.raises(InvalidArgument, match="hyper_parameters"):
        hub.create_task("t", source="x=1", hyper_parameters=[("lr", 0.1)])
    with pytest.raises(InvalidField, match="lr"):
        hub.create_task("t", source="x=1", hyper_parameters={"lr": float("nan")})
    with pytest.raises(InvalidField, match="big"):
        hub.create_task("t", source="x=1", hyper_parameters={"big": np.uint64(2**64 - 1)})
    with pytest.raises(InvalidArgument, match="saved_result_keys"):
        hub.create_task("t", source="x=1", saved_result_keys=["a.b"])
    with pytest.raises(ReservedField, match="result"):
        hub.create_task("t", source="x=1", result=1)
    assert hub.find_tasks() == []


def test_a_nan_result_fails_the_task_with_a_message_that_says_nan(hub):
    hub.create_task("t", source="acc = float('nan')", saved_result_keys=["acc"], max_attempts=1)
    task = hub.run_top_task("t")
    assert task.status == "failed" and "NaN" in task.error["message"] and "acc" in task.error["message"]


def test_sort_on_time_runs_the_newest_task_first(hub):
    ids = [hub.create_task("t", source="x = 1") for _ in range(3)]
    assert hub.run_top_task("t", sort=[("time", -1)]).id == ids[-1]
    assert hub.run_top_task("t", sort="-time").id == ids[-2]
    assert hub.run_top_task("t", sort="time").id == ids[0]


def test_hand_backs_are_free_only_up_to_a_bound(hub):
    task_id = hub.create_task("t", source="x = 1", max_attempts=1)
    runner = {"id": "r", "host": "h", "pid": 1, "gpu": None}
    for _ in range(5):  # e.g. a task that keeps making its runner stop
        claim = hub.queue.claim_next(runner, 30)
        assert hub.queue.begin(claim) and hub.queue.finish(claim, Outcome("handed_back", reason="SIGTERM"))
    assert hub.get_task(task_id).status == "pending" and hub.get_task(task_id).attempts == 0
    claim = hub.queue.claim_next(runner, 30)
    assert hub.queue.begin(claim) and hub.queue.finish(claim, Outcome("handed_back", reason="SIGTERM"))
    task = hub.get_task(task_id)
    assert task.status == "failed" and task.error["type"] == "HandedBackTooOften" and task.attempts == 1


RUNNER = {"id": "r", "host": "h", "pid": 1, "gpu": None}


def test_finish_then_claim_writes_the_outcome_and_claims_the_next_task(hub):
    from tensorhub.tasks.queue import ClaimRequest
    first, second = (hub.create_task("t", source="x = 1", hyper_parameters={"i": i}) for i in range(2))
    claim = hub.queue.claim_next(RUNNER, 30, spread=True)
    assert hub.queue.begin(claim)
    written, nxt = hub.queue.finish_then_claim(claim, Outcome("finished", result={"x": 1}), None,
                                               ClaimRequest(RUNNER, 30))
    assert written and nxt is not None and {claim.task_id, nxt.task_id} == {first, second}
    done, running = hub.get_task(claim.task_id), hub.get_task(nxt.task_id)
    assert done.status == "finished" and done.result == {"x": 1} and done.attempts == 1
    assert running.status == "running" and running.attempts == 1 and nxt.attempt == 1
    assert hub.get_run(claim.run_id).status == "finished"           # its run closed with it
    assert hub.queue.begin(nxt) and hub.queue.finish(nxt, Outcome("finished", result={"x": 1}))
    assert hub.task_counts() == {"pending": 0, "running": 0, "finished": 2, "failed": 0, "cancelled": 0}
    # Asked again (its replies were lost), the runner hears its outcome landed; nothing is left to claim.
    assert hub.queue.finish_then_claim(claim, Outcome("finished", result={"x": 1}), None,
                                       ClaimRequest(RUNNER, 30)) == (True, None)


def test_finish_then_claim_opens_the_next_attempts_run_with_the_claim(hub):
    """The run of the next attempt is opened in the same command that closes this one's, before
    either task moves: whoever sees a task running (or ended) sees its run so; starting it then
    sends nothing more."""
    from tensorhub.tasks.queue import ClaimRequest
    for i in range(2):
        hub.create_task("t", source="x = 1", hyper_parameters={"i": i})
    claim = hub.queue.claim_next(RUNNER, 30, spread=True)
    assert hub.queue.begin(claim)
    written, nxt = hub.queue.finish_then_claim(claim, Outcome("finished", result={"x": 1}), None,
                                               ClaimRequest(RUNNER, 30))
    assert written and nxt is not None and nxt.run_id is not None
    run = hub.get_run(nxt.run_id)
    assert run.status == "running" and run.task_id == nxt.task_id and run.attempt == 1
    assert run.parent_run_id is None and run.hyper_parameters == nxt.task["hyper_parameters"]
    assert hub.get_run(claim.run_id).status == "finished"
    assert hub.queue.begin(nxt) and nxt.run_id == run.id                    # no second run
    assert [doc["_id"] for doc in hub.db["runs"].find({"task_id": nxt.task_id})] == [run.id]


def test_a_candidate_deleted_before_its_claim_lands_leaves_no_run_behind(hub):
    from tensorhub.tasks.queue import ClaimRequest
    for i in range(2):
        hub.create_task("t", source="x = 1", hyper_parameters={"i": i})
    claim = hub.queue.claim_next(RUNNER, 30, spread=True)  # keeps the other as a candidate
    assert hub.queue.begin(claim)
    gone = hub.find_tasks("t", status="pending")[0].id
    hub.db["tasks"].delete_one({"_id": gone})                 # deleted after the candidates were read
    written, nxt = hub.queue.finish_then_claim(claim, Outcome("finished", result={"x": 1}), None,
                                               ClaimRequest(RUNNER, 30))
    assert written and nxt is None
    assert hub.get_task(claim.task_id).status == "finished" and hub.get_run(claim.run_id).status == "finished"
    assert hub.db["runs"].count_documents({"task_id": gone}) == 0
    assert hub.db["task_claims"].count_documents({"task_id": gone}) == 0


def test_finish_then_claim_with_a_candidate_taken_meanwhile_claims_another(hub):
    from tensorhub.tasks.queue import ClaimRequest
    for i in range(3):
        hub.create_task("t", source="x = 1", hyper_parameters={"i": i}, max_attempts=1)
    claim = hub.queue.claim_next(RUNNER, 30, spread=True)  # keeps the other two as candidates
    other = hub.open_again().queue.claim_next({**RUNNER, "id": "other"}, 30)  # takes one of them
    written, nxt = hub.queue.finish_then_claim(claim, Outcome("failed", error={"type": "E", "message": "m"}),
                                               None, ClaimRequest(RUNNER, 30))
    assert written and nxt is not None and nxt.task_id not in (claim.task_id, other.task_id)
    assert hub.get_task(claim.task_id).status == "failed"
    assert hub.task_counts()["running"] == 2


def test_finish_then_claim_after_a_cancel_loses_the_outcome_but_still_claims(hub):
    from tensorhub.tasks.queue import ClaimRequest
    for i in range(2):
        hub.create_task("t", source="x = 1", hyper_parameters={"i": i})
    claim = hub.queue.claim_next(RUNNER, 30, spread=True)
    assert hub.cancel_tasks("t", **{"hyper_parameters.i": claim.task["hyper_parameters"]["i"]}) == 1
    written, nxt = hub.queue.finish_then_claim(claim, Outcome("finished", result={"x": 1}), None,
                                               ClaimRequest(RUNNER, 30))
    assert not written and nxt is not None
    assert hub.get_task(claim.task_id).status == "cancelled" and hub.get_task(nxt.task_id).status == "running"


def test_a_retry_that_finish_then_claim_returns_to_pending_wakes_idle_runners(hub):
    from tensorhub.tasks.queue import ClaimRequest
    retried = hub.create_task("t", source="x = 1", max_attempts=2)
    hub.create_task("t", source="x = 1")
    claim = hub.queue.claim_next(RUNNER, 30)
    assert claim.task_id == retried
    token = hub.queue.signal()
    written, nxt = hub.queue.finish_then_claim(claim, Outcome("failed", error={"type": "E", "message": "m"}),
                                               None, ClaimRequest(RUNNER, 30))
    assert written and nxt is not None
    assert hub.get_task(retried).status in ("pending", "running") and hub.queue.signal() != token


def test_one_runner_of_the_fleet_reaps_per_interval(hub):
    other = hub.open_again()
    assert hub.queue.reap_turn(0, "a")          # the first turn ever; its interval is already over
    assert other.queue.reap_turn(30, "b")       # so the next caller reaps, and moves it on 30 s
    assert not hub.queue.reap_turn(30, "a") and not other.queue.reap_turn(30, "b")
    from tensorhub import TensorHub
    assert TensorHub(hub.uri, project_name="elsewhere").queue.reap_turn(30, "c")  # projects reap apart


def test_a_kept_candidate_deleted_meanwhile_leaves_no_ticket_behind(hub):
    ids = [hub.create_task("t", source="x = 1", hyper_parameters={"i": i}) for i in range(2)]
    claim = hub.queue.claim_next(RUNNER, 30, spread=True)       # keeps the other task as a candidate
    other = next(i for i in ids if i != claim.task_id)
    assert hub.open_again().delete_tasks("t", **{"hyper_parameters.i": ids.index(other)}) == 1
    assert hub.queue.claim_next(RUNNER, 30, spread=True) is None
    assert hub.db["task_claims"].count_documents({"task_id": other}) == 0


def test_starting_an_attempt_again_after_a_lost_reply_keeps_its_one_run(hub):
    hub.create_task("t", source="x = 1")
    claim = hub.queue.claim_next(RUNNER, 30)
    assert hub.queue.begin(claim)
    first = claim.run_id
    assert hub.queue.begin(claim) and claim.run_id == first   # the retry finds its run already there
    assert [run.id for run in hub.list_runs("t")] == [first]


def test_a_runner_that_took_the_signalled_task_spares_the_idle_fleet_a_look(hub):
    hub.create_task("t", source="x = 1")
    polled = hub.queue.poll()
    assert polled.token is not None and polled.taken is None
    assert hub.queue.claim_next(RUNNER, 30, spread=True) is not None and hub.queue.drained
    hub.queue.mark_taken(polled.token)
    assert hub.queue.poll().taken == polled.token          # idle runners seeing this token skip their read
    hub.create_task("t", source="x = 1")
    newer = hub.queue.poll()
    assert newer.token not in (polled.token, newer.taken)  # new work is never covered by an old mark
    hub.create_task("t", source="x = 1")
    assert hub.queue.claim_next(RUNNER, 30, spread=True) is not None and not hub.queue.drained  # one is left


def test_runners_of_a_big_fleet_spread_their_claims_over_a_wider_window(hub):
    """Twenty runners claiming from one backlog mostly pick different tasks when each reads eight
    candidates per live runner (160) instead of 32: fewer lost tickets and fewer reads again."""
    import random

    ids = hub.create_grid_tasks("t", source="x = 1", grid={"i": list(range(200))})
    position = {task_id: i for i, task_id in enumerate(ids)}

    def positions(fleet: int | None) -> list[int]:
        hub.queue.expect_fleet(fleet)
        random.seed(7)
        claims = [hub.queue.claim_next(RUNNER, 30, spread=True) for _ in range(10)]
        return [position[c.task_id] for c in claims]

    assert max(positions(None)) < 32                    # fleet size unknown: the top 32, shuffled
    wide = positions(20)
    assert max(wide) >= 32 and max(wide) < 32 + 160     # the next 160 pending ones, shuffled


def _ids_in_a_row(count: int) -> list:
    """Task ids as one distributor makes them: one second, one process, consecutive counters."""
    from bson import ObjectId

    return [ObjectId(f"6566f0a0{'ab' * 5}{n:06x}") for n in range(count)]


def test_a_fleet_deals_a_backlog_out_by_id_and_a_runner_helps_others_from_their_far_end():
    """Each runner tries its own share first, best first; then the other shares' tasks, the
    next one of each share (what its owner takes next) last; then lower priorities."""
    from tensorhub.tasks.shares import deal, share_of

    ids = _ids_in_a_row(12)
    assert Counter(share_of(i, 3) for i in ids) == {0: 4, 1: 4, 2: 4}  # dealt round robin
    tasks = [{"_id": i, "_hub": {"priority": 1}} for i in ids]
    low = {"_id": _ids_in_a_row(13)[12], "_hub": {"priority": 0}}
    mine = share_of(ids[0], 3)
    ordered, own = deal([*tasks, low], rank=mine, fleet=3)
    assert own == 4 and ordered[:4] == [t for t in tasks if share_of(t["_id"], 3) == mine]
    next_of_others = {ids[1], ids[2]}       # the first task of each other share
    assert {t["_id"] for t in ordered[10:12]} == next_of_others
    assert ordered[12] is low
    alone, own = deal([*tasks, low], rank=None, fleet=3)  # not registered: top tasks shuffled
    assert own == 0 and sorted(t["_id"] for t in alone[:12]) == ids and alone[12] is low


def test_a_runner_that_loses_one_of_many_fresh_candidates_looks_again_soon(hub):
    """A fleet runner gives up a claim after one race lost on a fresh read, but says that work may
    be left (``contended``) so that it looks again within a second rather than wait for a signal."""
    from tensorhub.tasks.shares import share_of

    ids = hub.create_grid_tasks("t", source="x = 1", grid={"i": list(range(6))})
    hub.queue.expect_fleet(2, rank=share_of(ids[0], 2))           # ids[0] is the first it tries
    hub.db["task_claims"].insert_one({"_id": f"{ids[0]}/1", "owner": "rival", "task_id": ids[0],
                                      "taken_at": dt.datetime.now(dt.timezone.utc)})
    assert hub.queue.claim_next(RUNNER, 30, spread=True) is None and hub.queue.contended
    hub.db["tasks"].update_one({"_id": ids[0]}, {"$set": {"status": "running"}})  # the rival's claim lands
    claim = hub.queue.claim_next(RUNNER, 30, spread=True)
    assert claim is not None and share_of(claim.task_id, 2) == share_of(ids[0], 2)


def test_runners_registering_raise_the_fleet_size_and_the_reaper_sets_it(hub):
    """Idle runners pace their polls by the fleet's size: a reaper that counted while the fleet was
    starting must not leave it small until its next turn, so each registration raises it."""
    assert hub.queue.reap_turn(60, "first-runner")
    hub.queue.note_fleet_size(1)                       # the first reaper counted itself only
    hub.queue.note_fleet_size(5, at_least=True)
    hub.queue.note_fleet_size(3, at_least=True)        # registered earlier, counted fewer
    assert hub.queue.poll().fleet_size == 5
    hub.queue.note_fleet_size(2)                       # the next reaper's count: three runners left
    assert hub.queue.poll().fleet_size == 2
