"""`proxal ls-backend`: Label Studio's ML-backend contract, through the real HTTP app
(Starlette's TestClient) over a real proxy and orchestrator on port 0 and a small pool.

The JSON below is what Label Studio 1.23 sends and reads:
- label_studio/ml/api_connector.py (HumanSignal/label-studio): `setup` posts {project:
  "<id>.<created_at>", schema, hostname, access_token, extra_params}; `make_predictions`
  posts {tasks, project, label_config, params: {login, password, context}}.
- label_studio/ml/models.py: reads response["results"], one per task, each with "result",
  "score" and "model_version"; `create_ml_webhook` subscribes <backend>/webhook to every
  webhook action (send_payload).
- label_studio/webhooks/models.py and serializers_for_hooks.py: ANNOTATION_CREATED /
  ANNOTATION_UPDATED send {action, annotation (all fields), task (all fields), project};
  ANNOTATIONS_DELETED sends {action, annotations: [{id}], project}.
- label_studio/projects/functions/next_task.py `_try_uncertainty_sampling`: tasks ordered
  by predictions__score ascending, among predictions of project.model_version.
- label_studio_ml/api.py (HumanSignal/label-studio-ml-backend): routes /setup, /predict,
  /webhook, /train, /health, /, /metrics; Basic auth checked before every request (401
  with WWW-Authenticate); unknown webhook actions answered 200 {"status": "Unknown event"}.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxal.orchestrator.v1 import orchestrator_pb2_grpc
from proxal.orchestrator_service.cli.main import main
from proxal.orchestrator_service.labelstudio.backend import LabelStudioBackend, SessionSettings
from proxal.orchestrator_service.labelstudio.mapping import ls_score
from proxal.orchestrator_service.labelstudio.state import AnnotationIndex
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.ls_client import LsOrchestrator
from proxal.orchestrator_service.rpc.ls_http import Auth, create_app
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.proxy.v1 import proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import Store
from starlette.testclient import TestClient

from tests.conftest import add_session_pool

CLASSES = ["alpha", "beta", "gamma"]
CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single" showInLine="true">
    <Choice value="alpha"/>
    <Choice value="beta"/>
    <Choice value="gamma"/>
  </Choices>
</View>"""
PROJECT = {"id": 7, "title": "tickets", "label_config": CONFIG}
USER, PASSWORD = "ls", "s3cret"
PROJECT_IDS = itertools.count(100)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A real proxy and orchestrator on port 0 over pool 'tickets' (60 train items, texts
    "train text i") -> (orchestrator address, gold labels)."""
    store = Store(str(tmp_path_factory.mktemp("ls") / "store"))
    gold = add_session_pool(store, "tickets", CLASSES, n_train=60)
    proxy_servicer = ProxyServicer(VersionCache(store, 2, 8), score_threads=1)
    proxy = start_server(
        ServerSettings(port=0),
        lambda s: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(proxy_servicer, s),
        [SERVICE_NAME],
    )
    servicer = OrchestratorServicer(Sessions(store, ProxyClient(proxy.address)))
    running = start_server(
        ServerSettings(port=0),
        lambda s: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
        ["proxal.orchestrator.v1.OrchestratorService"],
    )
    yield running.address, gold
    running.stop(0)
    proxy.stop(0)


class Backend:
    """The HTTP app with Basic auth, and the orchestrator behind it for checks."""

    def __init__(self, address: str, state: Path, project: int):
        self.orchestrator = LsOrchestrator(address)
        index = AnnotationIndex(state)
        backend = LabelStudioBackend(self.orchestrator, SessionSettings("tickets"), index)
        app = create_app(backend, Auth(USER, PASSWORD, "tok"), address)
        self.http = TestClient(app, headers={"Authorization": basic(USER, PASSWORD)})
        self.project = {**PROJECT, "id": project}
        self.uid = f"{project}.1765000000"
        self.session = f"ls-{project}"

    def labels(self) -> dict[int, str]:
        """The session's current labels, as the orchestrator exports them."""
        data = self.orchestrator.rpc.export(self.session, "jsonl")
        rows = [json.loads(line) for line in data.decode().splitlines()]
        return {int(r["id"]): str(r["label"]) for r in rows}

    def setup(self) -> dict[str, Any]:
        reply = self.http.post("/setup", json=setup_body(self.uid))
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def annotate(self, action: str, annotation: int, item: int, label: str, at: str) -> Any:
        body = event(self.project, action, annotation, item, label, at)
        return self.http.post("/webhook", json=body)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def setup_body(uid: str, config: str = CONFIG) -> dict[str, Any]:
    return {
        "project": uid,
        "schema": config,
        "hostname": "http://localhost:8080",
        "access_token": "0123456789abcdef",
        "extra_params": None,
    }


def task(item: int, by_text: bool = False) -> dict[str, Any]:
    """A task as Label Studio serializes it (TaskSimpleSerializer): data carries proxal's
    id (proxal's Label Studio export) or only the text."""
    data: dict[str, Any] = {"text": f"train text {item}"}
    if not by_text:
        data["proxal_id"] = item
    return {
        "id": 1000 + item,
        "data": data,
        "meta": {},
        "created_at": "2026-12-06T01:00:00.000000Z",
        "updated_at": "2026-12-06T01:00:00.000000Z",
        "is_labeled": False,
        "overlap": 1,
        "inner_id": item + 1,
        "total_annotations": 0,
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "annotations": [],
        "predictions": [],
        "project": 7,
        "file_upload": None,
    }


def event(
    project: dict[str, Any], action: str, annotation: int, item: int, label: str, at: str
) -> dict[str, Any]:
    """An ANNOTATION_CREATED / ANNOTATION_UPDATED webhook body (send_payload)."""
    return {
        "action": action,
        "annotation": {
            "id": annotation,
            "result": [
                {
                    "value": {"choices": [label]},
                    "id": f"r{annotation}",
                    "from_name": "sentiment",
                    "to_name": "text",
                    "type": "choices",
                    "origin": "manual",
                }
            ],
            "created_username": " admin@example.com, 1",
            "created_ago": "0 minutes",
            "completed_by": 1,
            "was_cancelled": False,
            "ground_truth": False,
            "created_at": "2026-12-06T01:00:00.000000Z",
            "updated_at": at,
            "draft_created_at": None,
            "lead_time": 3.2,
            "import_id": None,
            "last_action": None,
            "task": 1000 + item,
            "project": project["id"],
            "updated_by": 1,
            "parent_prediction": None,
            "parent_annotation": None,
            "last_created_by": None,
        },
        "task": task(item, by_text=True),
        "project": project,
    }


@pytest.fixture
def backend(stack: tuple[str, list[str]], tmp_path: Path) -> Iterator[Backend]:
    """A backend on its own Label Studio project (a fresh session per test)."""
    made = Backend(stack[0], tmp_path / "state.sqlite3", next(PROJECT_IDS))
    yield made
    made.orchestrator.close()


def test_health_metrics_and_auth(backend: Backend) -> None:
    for path in ("/", "/health"):
        reply = backend.http.get(path)
        assert reply.status_code == 200 and reply.json()["status"] == "UP"
    assert backend.http.get("/metrics").json() == {}
    wrong = backend.http.get("/health", headers={"Authorization": basic(USER, "nope")})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert "credentials" in wrong.json()["error"]
    assert backend.http.get("/health", headers={"Authorization": ""}).status_code == 401
    bearer = backend.http.get("/health", headers={"Authorization": "Bearer tok"})
    assert bearer.status_code == 200


def test_setup_creates_the_session_and_predict_follows_proxals_order(
    backend: Backend, stack: tuple[str, list[str]]
) -> None:
    gold = stack[1]
    version = backend.setup()["model_version"]
    assert version == f"{backend.session}@r0/l0/v1"
    assert backend.setup()["model_version"] == version  # found, not created twice
    tasks = [task(i, by_text=i % 2 == 0) for i in range(20)] + [task(3, by_text=True)]
    body = {
        "tasks": tasks,
        "project": backend.uid,
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": None},
    }
    cold = backend.http.post("/predict", json=body).json()["results"]
    assert [r["result"] for r in cold] == [[]] * 21  # no proxy before two classes
    assert {r["score"] for r in cold} == {0.5}
    for n, i in enumerate(range(30, 42)):
        reply = backend.annotate("ANNOTATION_CREATED", 500 + n, i, gold[i], f"t{n}")
        assert reply.status_code == 200, reply.text
    reply = backend.http.post("/predict", json=body)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert len(results) == 21 and results[20] == results[3]  # two tasks of one item
    results = results[:20]
    direct = backend.orchestrator.predict(backend.session, list(range(20)))
    assert all(r["model_version"] == direct.model_version for r in results)
    assert direct.model_version == backend.setup()["model_version"]  # setup names it too
    for r, guess in zip(results, direct.guesses, strict=True):
        assert guess is not None
        assert r["result"] == [
            {
                "from_name": "sentiment",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [guess.label]},
            }
        ]
        assert 0.0 < r["score"] < 1.0 and r["score"] == pytest.approx(ls_score(guess.score))
    by_ls = sorted(range(20), key=lambda k: results[k]["score"])
    by_proxal = sorted(range(20), key=lambda k: -direct.guesses[k].score)  # type: ignore[union-attr]
    assert by_ls == by_proxal


def test_webhooks_write_once_relabel_and_remove(backend: Backend, tmp_path: Path) -> None:
    backend.setup()
    first = backend.annotate("ANNOTATION_CREATED", 11, 3, "beta", "2026-12-06T01:02:03.1Z")
    assert first.status_code == 200 and first.json()["written"] == 1
    retry = backend.annotate("ANNOTATION_CREATED", 11, 3, "beta", "2026-12-06T01:02:03.1Z")
    assert retry.status_code == 200 and retry.json()["replayed"] is True
    assert backend.labels() == {3: "beta"}
    status = backend.orchestrator.rpc.status(backend.session)
    assert status.labels == 1
    exported = backend.orchestrator.rpc.export(backend.session, "jsonl").decode()
    assert '"annotator": "ls.1"' in exported
    update = backend.annotate("ANNOTATION_UPDATED", 11, 3, "gamma", "2026-12-06T01:09:00Z")
    assert update.status_code == 200 and update.json()["written"] == 1
    assert backend.labels() == {3: "gamma"}
    address = backend.orchestrator.rpc.address
    backend = Backend(address, tmp_path / "state.sqlite3", backend.project["id"])  # a restart
    deleted = {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": 11}],
        "project": backend.project,
    }
    gone = backend.http.post("/webhook", json=deleted)
    assert gone.status_code == 200 and gone.json()["written"] == 1
    assert backend.labels() == {}
    again = backend.http.post("/webhook", json=deleted)  # Label Studio retried it
    assert again.status_code == 200 and again.json()["replayed"] is True
    one, two = (event(backend.project, "", n, n, "alpha", "e") for n in (8, 9))
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [one["annotation"], two["annotation"]],
        "task": [one["task"], two["task"]],
        "project": backend.project,
    }
    reply = backend.http.post("/webhook", json=bulk)
    assert reply.status_code == 200 and reply.json()["written"] == 2
    assert backend.labels() == {8: "alpha", 9: "alpha"}
    backend.orchestrator.close()


def test_bad_input_is_a_clear_error_and_changes_nothing(backend: Backend) -> None:
    http = backend.http
    no_choices = '<View><Text name="text" value="$text"/></View>'
    reply = http.post("/setup", json=setup_body(backend.uid, no_choices))
    assert reply.status_code == 400 and "no <Choices> control" in reply.json()["error"]
    body = {"tasks": [task(1)], "project": backend.uid, "label_config": CONFIG}
    reply = http.post("/predict", json=body)
    assert reply.status_code == 404 and "not set up" in reply.json()["error"]
    backend.setup()
    backend.annotate("ANNOTATION_CREATED", 21, 5, "alpha", "a")
    other = CONFIG.replace('<Choice value="gamma"/>', '<Choice value="delta"/>')
    reply = http.post("/setup", json=setup_body(backend.uid, other))
    assert reply.status_code == 409 and "delta" in reply.json()["error"]
    reply = backend.annotate("ANNOTATION_CREATED", 22, 6, "omega", "b")
    assert reply.status_code == 400 and "not classes" in reply.json()["error"]
    unknown = event(backend.project, "ANNOTATION_CREATED", 23, 7, "beta", "c")
    unknown["task"]["data"] = {"text": "no such text in the pool"}
    reply = http.post("/webhook", json=unknown)
    assert reply.status_code == 404 and "not items of pool" in reply.json()["error"]
    missing = {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": 999}],
        "project": backend.project,
    }
    assert http.post("/webhook", json=missing).status_code == 404
    never = {
        **backend.project,
        "id": 4242,
    }  # TrainSuccessor itself: tests/orchestrator/test_jobs.py
    train = {"action": "START_TRAINING", "project": never}
    reply = http.post("/webhook", json=train)
    assert reply.status_code == 404 and "not set up" in reply.json()["error"]
    older = {"annotations": [], "project": "4242.1765000000", "label_config": CONFIG}
    assert http.post("/train", json=older).status_code == 404
    reply = http.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400 and "not JSON" in reply.json()["error"]
    reply = http.post("/webhook", json={"action": "PROJECT_UPDATED", "project": backend.project})
    assert reply.status_code == 200 and reply.json()["status"] == "Unknown event"
    bad = http.post(
        "/webhook",
        json=event(backend.project, "ANNOTATION_CREATED", 24, 8, "beta", "d"),
        headers={"Authorization": basic(USER, "wrong")},
    )
    assert bad.status_code == 401
    assert backend.labels() == {5: "alpha"}  # only the one good annotation
    assert http.get("/health").status_code == 200  # still serving


def test_bad_flags_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls-backend", "--pool", "tickets", "--basic-auth-user", "u"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--basic-auth-pass" in err
    assert main(["ls-backend", "--pool", "Bad Name", "--port", "1"]) == 2
    assert "pool name" in capsys.readouterr().err


def test_malformed_bodies_and_an_unreachable_orchestrator(backend: Backend, tmp_path: Path) -> None:
    http = backend.http
    reply = http.post("/setup", json=[1, 2])
    assert reply.status_code == 400 and "JSON object" in reply.json()["error"]
    reply = http.post("/setup", json={"schema": CONFIG})
    assert reply.status_code == 400 and "project" in reply.json()["error"]
    reply = http.post("/predict", json={"project": backend.uid, "label_config": CONFIG})
    assert reply.status_code == 404  # a project never set up, before its (missing) tasks
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    gone = LsOrchestrator(closed, timeout=1.0, retry_seconds=0.5)
    index = AnnotationIndex(tmp_path / "other.sqlite3")
    app = create_app(LabelStudioBackend(gone, SessionSettings("tickets"), index), Auth(), closed)
    reply = TestClient(app).post("/setup", json=setup_body(backend.uid))
    assert reply.status_code == 503 and "orchestrator" in reply.json()["error"]
    gone.close()
