"""The notebook client: docs/client.md's example, run as it is against a real orchestrator
(port 0) over a real store, and what the client raises and imports."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2_grpc
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.proxy.v1 import proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ProxalError,
    UnavailableError,
)
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import EncoderInfo, Store

from tests.conftest import BANKING77, REPO, read_jsonl

DOC = REPO / "docs" / "client.md"
WORDS = {
    "alarm_set": "set an alarm for",
    "calendar_set": "put in my calendar the meeting at",
    "play_music": "play the song number",
    "takeaway_order": "order a pizza for",
    "weather_query": "will it rain at",
}


def _tickets(store: Store, per_class: int = 40, dim: int = 16) -> None:
    """Pool 'tickets': unlabelled texts with the doc's keywords, one Gaussian blob each."""
    rng = np.random.default_rng(0)
    classes = list(WORDS)
    y = np.repeat(np.arange(len(classes)), per_class)
    rng.shuffle(y)
    texts = [f"{WORDS[classes[c]]} {i}" for i, c in enumerate(y)]
    store.add_pool_rows("tickets", "train", texts, [None] * len(texts))
    x = rng.normal(scale=4.0, size=(len(classes), dim))[y] + rng.normal(size=(len(y), dim))
    with store.begin_embedding("tickets", EncoderInfo("synthetic", "none", dim, 0)) as writer:
        writer.write(np.arange(len(y)), x.astype(np.float32))
        writer.commit()


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[str]:
    """A real proxy and orchestrator on port 0 over a store holding 'tickets' → address."""
    store = Store(str(tmp_path / "store"))
    _tickets(store)
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
    yield running.address
    running.stop(0)
    proxy.stop(0)


def _example() -> str:
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return code


def test_the_documented_example_runs(
    orchestrator: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROXAL_ORCHESTRATOR", orchestrator)
    intents = ("activate_my_card", "age_limit", "card_arrival", "lost_or_stolen_card")
    rows = [r for r in read_jsonl(BANKING77 / "train.jsonl") if r["label"] in intents]
    with open("tickets_labelled.csv", "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["body", "intent"])
        for intent in intents:  # 10 real texts of each
            writer.writerows([(r["text"], intent) for r in rows if r["label"] == intent][:10])
    namespace: dict[str, object] = {"__name__": "example"}
    exec(compile(_example(), str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "30 labels, 170 to go" in printed
    exported = Path("notebook_labels.csv").read_text(encoding="utf-8").splitlines()
    assert exported[0] == "id,text,label,annotator" and len(exported) == 31
    labels = namespace["labels"]
    assert isinstance(labels, list) and len(labels) == 30
    for record in labels:  # the keyword rule's answer for the text it was shown
        assert record.label == namespace["annotate"](record.text)  # type: ignore[operator]
        assert record.annotator == "notebook"
    assert "successor: full on 30 labels in " in printed
    outcome = namespace["outcome"]
    assert Path(outcome.report).is_file()  # type: ignore[attr-defined]
    assert "Sample saving ratio at 24 labels" in printed


def test_errors_are_the_proxal_hierarchy(orchestrator: str) -> None:
    from proxal import Client

    with Client(orchestrator) as client:
        with pytest.raises(NotFoundError, match="nope"):
            client.status("nope")
        with pytest.raises(InvalidArgumentError, match="unknown strategy 'margn'"):
            client.create_session("s", pool="tickets", classes=list(WORDS), strategy="margn")
        with pytest.raises(InvalidArgumentError, match="gold labels"):
            client.create_session("s", pool="tickets")  # an unlabelled split needs classes
    with (
        Client("127.0.0.1:1", retry_seconds=0.5, timeout=0.5) as dead,
        pytest.raises(UnavailableError),
    ):
        dead.list_sessions()


def test_settings_status_undo_release_import_and_delete(orchestrator: str) -> None:
    """The calls the CLI makes: every value a dataclass, every refusal a proxal error."""
    from proxal import Client
    from proxal.orchestrator_service.rpc.client import Asvp, UndoneItem, Ups, rpc_status

    with Client(orchestrator, annotator="ana") as client:
        ups = Ups(gamma=0.5, full_every=0)
        created = client.create_session(
            "tuned", "tickets", classes=list(WORDS), batch_size=4, c=0.5, max_iter=50, ups=ups
        )
        assert (created.c, created.max_iter, created.asvp) == (0.5, 50, None)
        assert created.ups is not None and (created.ups.gamma, created.ups.full_every) == (0.5, 0)
        assert created.lineage == (created.embedding_version,)
        batch = client.next_batch("tuned")
        client.submit("tuned", {batch[0].id: "alarm_set"})
        client.skip("tuned", [batch[1].id])
        undone = client.undo("tuned")  # the skip: the item comes back
        assert undone.items == (UndoneItem(batch[1].id, batch[1].text, ""),)
        assert undone.total_labels == 1 and not undone.replayed
        assert client.release("tuned") == 3
        imported = client.import_labels("tuned", {batch[0].id: "play_music", 7: "weather_query"})
        assert (imported.written, imported.already_labeled) == (1, 1)
        status = client.status("tuned")
        assert (status.labels, status.labeled_classes, status.leased) == (2, 2, 0)
        assert status.lineage == created.lineage and status.class_counts == {
            "alarm_set": 1,
            "weather_query": 1,
        }
        assert not status.asvp.enabled and status.asvp.last_check is None
        with pytest.raises(ProxalError, match="has 2 label") as refused:
            client.delete_session("tuned")
        assert rpc_status(refused.value) is not None
        deleted = client.delete_session("tuned", force=True)
        assert (deleted.session, deleted.labels, deleted.skipped) == ("tuned", 2, 0)
        assert deleted.label_events == 4  # label, skip, undo, import
        with pytest.raises(FailedPreconditionError, match="--encoder") as info:
            client.create_session("a", "tickets", classes=list(WORDS), asvp=Asvp(every_rounds=1))
        status_name, details = rpc_status(info.value) or ("", "")
        assert status_name == "FAILED_PRECONDITION" and details in str(info.value)
    assert rpc_status(NotFoundError("raised here, not by a call")) is None


def test_importing_the_client_loads_no_torch() -> None:
    code = "import sys; from proxal import Client; print(Client.__module__, 'torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.split() == ["proxal.orchestrator_service.rpc.client", "False"]
