"""Successor training as a job of a real OrchestratorService (port 0, a Lance store on
tmp_path, real MiniLM-L6): TrainSuccessor, WatchJob, ListModels, the queue, the model
store (local and S3 via moto), `proxal finetune` as a client, and the bad inputs (none of
which touches a session's labels). Trainings are tiny: 1 epoch, max_length 16. Jobs are
recorded in the store's session database (SQLite): another runner, or a restarted
orchestrator, answers for them; a stale queued/running record is an orphan, failed."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.cli.main import main
from proxal.orchestrator_service.successor import jobs
from proxal.orchestrator_service.successor.config import SuccessorConfig, TrainingStep
from proxal.orchestrator_service.successor.finetune import session_labels
from proxal.orchestrator_service.successor.jobs import (
    Job,
    JobRequest,
    JobRunner,
    RecordedJob,
    WatchedJob,
    choose_method,
)
from proxal.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from proxal.store import EncoderInfo, JobRecord, RoundRecord, Store
from proxal.store.local_s3 import moto_s3

from tests.orchestrator.jobs_server import (
    CLASSES,
    Server,
    add_session,
    label_counts,
    labelled_store,
    orchestrator,
    watch,
)

TINY = {"epochs": 1, "batch_size": 8, "max_length": 16, "device": "cpu"}
SUCCESSOR_FILES = {"model.safetensors", "config.json", "labels.json", "metrics.json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = Store(str(tmp_path_factory.mktemp("jobs") / "store"))
    labelled_store(store)
    with orchestrator(store) as running:
        yield running


def _asvp_decision(store: Store, session: str, method: str) -> None:
    """A round carrying an ASVP check, as the simulator records it (the LP-FT/FT rule)."""
    decision = {"action": "keep", "successor_method": method, "successor_reason": "B1 > B2"}
    store.record_round(
        RoundRecord(session, 1, "margin", "v1", [], 40, proxy_spec={"asvp": decision})
    )


def _states(events: list[pb.JobEvent]) -> list[str]:
    names = [pb.JobState.Name(e.state) for e in events]
    return [s for i, s in enumerate(names) if i == 0 or names[i - 1] != s]


def test_jobs_queue_train_store_and_list(server: Server) -> None:
    before = label_counts(server.store)
    _asvp_decision(server.store, "s2", "lp_ft")
    first = server.stub.TrainSuccessor(
        pb.TrainSuccessorRequest(
            session="s1", method="bottleneck", validation_fraction=0.2, patience=1, **TINY
        )
    )
    second = server.stub.TrainSuccessor(
        pb.TrainSuccessorRequest(session="s2", method="auto", skip_onnx=True, **TINY)
    )
    assert first.device == "cpu" and first.job_id != second.job_id
    # one job at a time: the second waits behind the first
    assert second.state == pb.JOB_STATE_QUEUED and second.queued_ahead == 1

    events = watch(server.stub, first.job_id)
    assert _states(events) == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    steps = [e for e in events if e.step > 0]
    assert len(steps) >= 2 and steps[-1].step == steps[-1].total_steps == 4  # 32 texts / 8
    assert all(np.isfinite(e.loss) and e.epochs == 1 for e in steps)
    assert events[-1].model_uri == first.model_uri
    record = server.store.get_job(first.job_id)  # recorded before the watcher saw it
    assert (record.state, record.model_uri) == ("succeeded", first.model_uri)
    assert record.request["method"] == "bottleneck" and record.last_event["step"] == 4
    directory = Path(first.model_uri)
    assert directory.parent.parent == Path(server.store.uri) / "models"
    assert SUCCESSOR_FILES | {"model.onnx", "tokenizer.json"} <= {
        p.name for p in directory.iterdir()
    }
    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["job_id"] == first.job_id and metrics["device"] == "cpu"
    assert metrics["labels"] == 40 and metrics["validation_labels"] == 8
    assert metrics["test"]["rows"] == 20 and metrics["test"]["rows_left_out"] == 5
    assert set(metrics["files"]) == {p.name for p in directory.iterdir()}
    assert json.loads((directory / "config.json").read_text())["adapter"]["kind"] == "bottleneck"
    onnx = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2026, 4003, 102]], dtype=np.int64)
    assert onnx.run(["logits"], {"input_ids": ids, "attention_mask": ids * 0 + 1})[0].shape == (
        1,
        4,
    )

    auto = watch(server.stub, second.job_id)
    assert auto[-1].state == pb.JOB_STATE_SUCCEEDED, auto[-1].message
    assert auto[-1].method == "lp_ft"  # the session's ASVP check chose LP-FT
    assert any("auto chose lp_ft" in e.message for e in auto)
    assert {e.phase for e in auto if e.step} == {"lp", "ft"}

    listed = server.stub.ListModels(pb.ListModelsRequest()).models
    assert [m.job_id for m in listed][:2] == [second.job_id, first.job_id]  # newest first
    only = server.stub.ListModels(pb.ListModelsRequest(session="s1")).models
    assert [(m.session, m.job_id, m.method, m.uri) for m in only] == [
        ("s1", first.job_id, "bottleneck", first.model_uri)
    ]
    assert 0 <= only[0].test_accuracy <= 1 and only[0].labels == 40
    assert "model.onnx" in only[0].files and json.loads(only[0].metrics_json)["labels"] == 40
    assert label_counts(server.store) == before  # sessions are only read


def test_a_failing_job_ends_failed_with_its_reason(server: Server, tmp_path: Path) -> None:
    broken = tmp_path / "broken-checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    reply = server.stub.TrainSuccessor(
        pb.TrainSuccessorRequest(session="s1", model=str(broken), **TINY)
    )
    events = watch(server.stub, reply.job_id)
    assert events[-1].state == pb.JOB_STATE_FAILED and events[-1].message
    assert not (Path(reply.model_uri) / "metrics.json").exists()
    listed = server.stub.ListModels(pb.ListModelsRequest(session="s1")).models
    assert reply.job_id not in {m.job_id for m in listed}


def test_the_client_trains_watches_waits_and_lists_models(server: Server, tmp_path: Path) -> None:
    """`Client`'s training calls: dataclasses out, proxal errors for refusals and failures."""
    from proxal import Client
    from proxal.orchestrator_service.rpc.client import JobFailedError, rpc_status

    with Client(server.address) as client:
        job = client.train_successor("s1", "full", onnx=False, **TINY)
        assert job.state in ("queued", "running") and job.device == "cpu"
        events = list(client.watch_job(job.id))
        assert [e.state for e in events][-1] == "succeeded" and events[-1].done
        assert events[-1].model_uri == job.model_uri and events[-1].method == "full"
        assert any(e.step == e.total_steps == 5 and e.phase for e in events)  # 40 texts / 8
        last = client.wait(job.id)  # a finished job's events are replayed
        assert last == events[-1]
        [model] = [m for m in client.list_models("s1") if m.job_id == job.id]
        assert (model.session, model.method, model.uri, model.labels) == (
            "s1",
            "full",
            job.model_uri,
            40,
        )
        assert set(model.files) >= SUCCESSOR_FILES and "model.onnx" not in model.files
        assert model.test_accuracy is not None and 0 <= model.test_accuracy <= 1
        assert model.metrics["job_id"] == job.id and model.metrics["labels"] == 40
        assert job.id in {m.job_id for m in client.list_models()}

        with pytest.raises(FailedPreconditionError, match="labels of one class only") as info:
            client.train_successor("one", **TINY)
        # the status name and the server's own message, as the CLI prints them
        assert rpc_status(info.value) == (
            "FAILED_PRECONDITION",
            str(info.value).removeprefix("orchestrator: "),
        )
        with pytest.raises(InvalidArgumentError, match="method must be one of"):
            client.train_successor("s1", "xgboost", **TINY)
        with pytest.raises(NotFoundError, match="no orchestrator of this session database"):
            list(client.watch_job("job-x"))
        with pytest.raises(NotFoundError):
            client.list_models("nope")

        broken = tmp_path / "broken-checkpoint"
        broken.mkdir()
        (broken / "config.json").write_text("{}")
        (broken / "model.safetensors").write_bytes(b"not safetensors")
        failing = client.train_successor("s1", model=str(broken), **TINY)
        with pytest.raises(JobFailedError, match=f"job {failing.id} failed: ") as failed:
            client.wait(failing.id)
        assert failed.value.event.state == "failed" and failed.value.event.message


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"session": "nope"}, "NOT_FOUND", "session 'nope' not found"),
        ({"session": "orphan"}, "NOT_FOUND", "pool 'gone' not found"),
        ({"session": "empty"}, "FAILED_PRECONDITION", "session 'empty' has no labels"),
        ({"session": "one"}, "FAILED_PRECONDITION", "labels of one class only"),
        ({"method": "xgboost"}, "INVALID_ARGUMENT", "method must be one of full, lp_ft"),
        ({"epochs": -1}, "INVALID_ARGUMENT", "epochs must be >= 1"),
        ({"max_length": 100_000}, "INVALID_ARGUMENT", "max_length must be in [2, 512]"),
        ({"validation_fraction": 1.5}, "INVALID_ARGUMENT", "validation_fraction must be in"),
        ({"time_budget_s": -3}, "INVALID_ARGUMENT", "time_budget_s must be > 0"),
        ({"device": "tpu"}, "INVALID_ARGUMENT", "device must be 'auto', 'cpu' or 'cuda[:N]'"),
        ({"session": "few", "validation_fraction": 0.5}, "INVALID_ARGUMENT", "no training"),
        ({"plasm": pb.PlasmOptions(enabled=True, filter="tracin")}, "INVALID_ARGUMENT", "filter"),
        ({"plasm": pb.PlasmOptions(enabled=True, heldout=2)}, "INVALID_ARGUMENT", "[0, 1)"),
        ({"model": "/nowhere"}, "INVALID_ARGUMENT", "is not a Hugging Face encoder checkpoint"),
    ],
)
def test_bad_requests_are_refused_and_touch_nothing(
    server: Server, fields: dict[str, Any], code: str, message: str
) -> None:
    before = label_counts(server.store)
    models = server.stub.ListModels(pb.ListModelsRequest()).models
    request = pb.TrainSuccessorRequest(**{"session": "s1", **TINY, **fields})
    got, details = _code(lambda: server.stub.TrainSuccessor(request))
    assert got.name == code and message in details, details
    assert label_counts(server.store) == before
    assert server.stub.ListModels(pb.ListModelsRequest()).models == models


def test_a_deleted_session_is_not_found(server: Server) -> None:
    add_session(server.store, "gone-soon", "bank", [0, 25], ["card_arrival", "exchange_rate"])
    server.stub.DeleteSession(pb.DeleteSessionRequest(session="gone-soon", force=True))
    request = pb.TrainSuccessorRequest(session="gone-soon", **TINY)
    code, details = _code(lambda: server.stub.TrainSuccessor(request))
    assert code == grpc.StatusCode.NOT_FOUND and "session 'gone-soon' not found" in details


def test_unknown_jobs_and_a_restart(server: Server) -> None:
    code, details = _code(lambda: list(server.stub.WatchJob(pb.WatchJobRequest(job_id="job-x"))))
    assert code == grpc.StatusCode.NOT_FOUND and "job 'job-x' is unknown" in details
    assert "ListModels" in details
    code, details = _code(lambda: list(server.stub.WatchJob(pb.WatchJobRequest())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "job_id is required" in details
    code, _ = _code(lambda: server.stub.ListModels(pb.ListModelsRequest(session="nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    stored = server.stub.ListModels(pb.ListModelsRequest()).models
    assert stored  # from the test above
    with orchestrator(Store(server.store.uri)) as restarted:  # a new orchestrator process
        # a job it never ran: the database's final event, and the stream ends
        [event] = watch(restarted.stub, stored[0].job_id)
        assert (event.job_id, event.state, event.model_uri) == (
            stored[0].job_id,
            pb.JOB_STATE_SUCCEEDED,
            stored[0].uri,
        )
        assert event.session == stored[0].session and event.message.startswith("stored at")
        assert restarted.stub.ListModels(pb.ListModelsRequest()).models == stored


def test_auto_without_an_asvp_check_and_too_few_labels_is_full(server: Server) -> None:
    data = session_labels(server.store, "few")  # one label per class: nothing to hold out
    method, reason = choose_method(server.store, data, SuccessorConfig(**TINY))
    assert method == "full" and "too few labels" in reason


def test_auto_probes_against_a_proxy_on_the_sessions_embeddings(server: Server) -> None:
    store = server.store
    ids = np.asarray(store.pool_rows("bank", columns=["id"]).column("id").to_pylist())
    info = EncoderInfo(model_id="synthetic", backend="torch", dim=8, max_length=16)
    with store.begin_embedding("bank", info) as writer:
        writer.write(ids, np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32))
        assert writer.commit().version == "v1"  # the version the sessions select on
    data = session_labels(store, "s1")  # no ASVP check recorded: the job probes
    steps: list[TrainingStep] = []
    method, reason = choose_method(store, data, SuccessorConfig(**TINY), steps.append)
    assert method in ("lp_ft", "full") and "held-out texts" in reason
    assert steps and {s.phase for s in steps} == {"probe/ft"}


def test_finetune_cli_is_a_client_of_the_job(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["finetune", "s1", "--orchestrator", server.address, "--no-onnx"]
    args += ["--epochs", "1", "--max-length", "16", "--batch-size", "8", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "full minilm-l6 successor on 40 labels of session 's1'" in out
    assert "on 20 rows of the session's 4 classes; 5 rows of other classes left out" in out
    uri = out.split("artifacts: ")[-1].split(" (")[0]
    assert {p.name for p in Path(uri).iterdir()} >= SUCCESSOR_FILES
    assert main(["finetune", "nope", "--orchestrator", server.address]) == 2
    assert "proxal: NOT_FOUND: session 'nope' not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "s1", "--orchestrator", server.address, "--method", "x"])
    assert exc.value.code == 2  # argparse lists the choices


def test_models_go_to_object_storage(tmp_path: Path) -> None:
    with moto_s3("proxal-jobs") as s3:
        db = f"sqlite:///{tmp_path / 'proxal.db'}"  # a store on object storage names its database
        store = Store("s3://proxal-jobs/store", storage_options=s3.options, db=db)
        labelled_store(store)
        with orchestrator(store) as running:
            request = pb.TrainSuccessorRequest(session="s1", skip_onnx=True, **TINY)
            reply = running.stub.TrainSuccessor(request)
            events = watch(running.stub, reply.job_id)
            assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1].message
            assert reply.model_uri == f"s3://proxal-jobs/store/models/s1/{reply.job_id}"
            [model] = running.stub.ListModels(pb.ListModelsRequest(session="s1")).models
        prefix = f"store/models/s1/{reply.job_id}/"
        listed = s3.client.list_objects_v2(Bucket="proxal-jobs", Prefix=prefix)["Contents"]
        keys = {o["Key"].removeprefix(prefix) for o in listed}
        assert keys >= SUCCESSOR_FILES and set(model.files) == keys
        assert model.uri == reply.model_uri and model.labels == 40
        body = s3.client.get_object(Bucket="proxal-jobs", Key=prefix + "labels.json")["Body"]
        assert json.loads(body.read())["label2id"] == {c: i for i, c in enumerate(CLASSES)}


def test_queue_limit_and_close_cancels(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's bookkeeping alone: training is replaced by a step that waits on a gate."""
    gate = threading.Event()

    def train(job: Job) -> str:
        gate.wait(60)
        job.on_step(TrainingStep("ft", 1, 1, 1, 1, 0.5))  # a running job stops at a step
        return "never"

    runner = JobRunner(server.store, max_queued=1)
    monkeypatch.setattr(runner, "_train_and_store", train)
    running, ahead = runner.submit(JobRequest("s1"))
    assert ahead == 0
    seen = 0
    while running.last.state != "running":
        seen += len(running.wait_events(seen, 5.0))
    queued, ahead = runner.submit(JobRequest("s1"))
    assert ahead == 1 and queued.last.state == "queued"
    with pytest.raises(ResourceExhaustedError, match="1 successor jobs are queued already"):
        runner.submit(JobRequest("s1"))
    runner.close()
    gate.set()
    for job in (running, queued):
        seen = 0
        while not job.done:
            seen += len(job.wait_events(seen, 5.0))
        assert job.last.state == "failed" and job.last.message.startswith("cancelled")
    with pytest.raises(FailedPreconditionError, match="shutting down"):
        runner.submit(JobRequest("s1"))


# ---------------------------------------------------------------- jobs in the database


def _until(job: WatchedJob, state: str) -> None:
    """Wait (at most 60 s) for the job's last event to be in `state`."""
    seen, deadline = 0, time.monotonic() + 60
    while job.last.state != state:
        assert time.monotonic() < deadline, f"{job.id} is {job.last.state}, not {state}"
        seen += len(job.wait_events(seen, 1.0))


def _gated_runner(store: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[JobRunner, Any]:
    """A runner whose jobs wait on the returned gate, take one step and store nothing."""
    gate = threading.Event()
    runner = JobRunner(store)

    def train(job: Job) -> str:
        gate.wait(60)
        job.on_step(TrainingStep("ft", 1, 1, 4, 4, 0.5))
        return runner.model_uri(job.data.session, job.id)

    monkeypatch.setattr(runner, "_train_and_store", train)
    return runner, gate


def _orphan(store: Store, job_id: str, state: str, age: float) -> None:
    """A record written by an orchestrator that last reported `age` s ago."""
    event = {"job_id": job_id, "state": state, "session": "s1", "method": "full"}
    event |= {"device": "cpu", "step": 3, "total_steps": 5, "loss": None, "message": "training"}
    request = {"session": "s1", "method": "full"}
    store.save_job(
        JobRecord(
            job_id, "s1", state, request, event, owner="gone:1:x", updated_at=time.time() - age
        )
    )


def test_a_jobs_record_goes_queued_running_succeeded(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, gate = _gated_runner(server.store, monkeypatch)
    first, _ = runner.submit(JobRequest("s1"))
    _until(first, "running")  # a state is recorded before it is published
    assert server.store.get_job(first.id).state == "running"
    second, ahead = runner.submit(JobRequest("s2", method="lp_ft"))
    queued = server.store.get_job(second.id)  # recorded before submit returned
    assert ahead == 1 and (queued.state, queued.session) == ("queued", "s2")
    assert queued.owner == runner.owner and queued.owner.count(":") == 2
    assert queued.request["method"] == "lp_ft" and queued.request["config"]["epochs"] == 6
    assert queued.last_event["message"] == "queued (1 job(s) ahead)"
    assert queued.last_event["loss"] is None  # NaN is stored as null
    assert queued.updated_at == pytest.approx(time.time(), abs=30)
    gate.set()
    for job in (first, second):
        _until(job, "succeeded")
        record = server.store.get_job(job.id)
        assert (record.state, record.model_uri) == ("succeeded", job.last.model_uri)
        assert record.model_uri == runner.model_uri(job.request.session, job.id)
        assert record.last_event["step"] == 4 and record.last_event["loss"] == 0.5
    assert [r.job_id for r in server.store.list_jobs("s2")][-1] == second.id
    runner.close()


def test_another_runner_answers_for_a_recorded_job(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, gate = _gated_runner(server.store, monkeypatch)
    gate.set()
    job, _ = runner.submit(JobRequest("s1"))
    _until(job, "succeeded")
    other = JobRunner(Store(server.store.uri))  # another orchestrator on the same database
    view = other.get(job.id)
    assert isinstance(view, RecordedJob) and view.done
    assert view.wait_events(0, 5.0) == [view.last] and view.wait_events(1, 5.0) == []
    assert view.last == job.last  # every field, elapsed_s and the loss included
    with pytest.raises(NotFoundError, match="job 'job-nope' is unknown"):
        other.get("job-nope")
    runner.close()
    other.close()


def test_a_stale_record_is_an_orphan_reported_failed(server: Server) -> None:
    _orphan(server.store, "job-orphan-run", "running", jobs.ORPHAN_AFTER_S + 30)
    _orphan(server.store, "job-orphan-que", "queued", jobs.ORPHAN_AFTER_S + 30)
    _orphan(server.store, "job-live", "running", 1.0)
    runner = JobRunner(Store(server.store.uri))
    for job_id in ("job-orphan-run", "job-orphan-que"):
        job = runner.get(job_id)
        assert job.done and job.last.state == "failed" and job.last.step == 3
        assert job.last.message.startswith(
            "its orchestrator stopped before the job finished (no progress for 9"
        )
        assert job.last.message.endswith(" s); submit it again")
    live = runner.get("job-live")
    assert not live.done and live.last.state == "running"
    # over gRPC: the orphan's one event, failed, and the stream ends
    [event] = watch(server.stub, "job-orphan-run")
    assert event.state == pb.JOB_STATE_FAILED and "submit it again" in event.message
    assert (event.step, event.total_steps, event.device) == (3, 5, "cpu")


def test_watching_a_recorded_job_follows_its_record_to_the_end(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WatchJob on an orchestrator that is not running the job: it polls the database."""
    monkeypatch.setattr(jobs, "POLL_S", 0.05)
    _orphan(server.store, "job-elsewhere", "running", 0.0)

    def owner() -> None:  # the orchestrator running the job
        time.sleep(0.3)
        record = server.store.get_job("job-elsewhere")
        step = {**record.last_event, "step": 4, "loss": 0.25}
        server.store.save_job(replace(record, last_event=step, updated_at=time.time()))
        time.sleep(0.3)
        done = {**step, "state": "succeeded", "model_uri": "/m/s1/job-elsewhere"}
        server.store.save_job(
            replace(record, state="succeeded", last_event=done, model_uri="/m/s1/job-elsewhere")
        )

    writer = threading.Thread(target=owner)
    writer.start()
    events = watch(server.stub, "job-elsewhere")
    writer.join()
    assert (events[0].state, events[0].step) == (pb.JOB_STATE_RUNNING, 3)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    assert events[-1].model_uri == "/m/s1/job-elsewhere" and events[-1].step == 4
    assert [e.step for e in events] == sorted(e.step for e in events)


def test_records_are_refreshed_and_database_errors_do_not_kill_a_job(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(jobs, "RECORD_EVERY_S", 0.05)
    monkeypatch.setattr(jobs, "FINAL_RETRY_S", 0.01)
    store = Store(server.store.uri)
    runner, gate = _gated_runner(store, monkeypatch)
    job, _ = runner.submit(JobRequest("s1"))
    _until(job, "running")
    written = store.get_job(job.id).updated_at
    deadline = time.monotonic() + 30
    while store.get_job(job.id).updated_at == written:  # the heartbeat refreshes it
        assert time.monotonic() < deadline
        time.sleep(0.05)

    save = store.save_job
    broken = threading.Event()
    final_calls: list[str] = []

    def flaky(record: JobRecord) -> None:
        if record.state == "succeeded":
            final_calls.append(record.state)
            if len(final_calls) <= 2:
                raise RuntimeError("database is locked")
        if broken.is_set():
            raise RuntimeError("database is locked")
        save(record)

    monkeypatch.setattr(store, "save_job", flaky)
    broken.set()
    with caplog.at_level(logging.WARNING, logger=jobs.__name__):
        time.sleep(0.3)  # several refreshes fail: warnings, the job runs on
        assert job.last.state == "running" and not job.done
        assert "could not record its running event" in caplog.text
        broken.clear()
        gate.set()
        _until(job, "succeeded")
    assert final_calls == ["succeeded"] * 3  # the final write, tried until it went in
    assert store.get_job(job.id).state == "succeeded"
    runner.close()
