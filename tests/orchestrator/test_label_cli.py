"""`proxal label` driven as a person would, through a pseudo-terminal, and the `session` and
`labels` commands, against a real OrchestratorService over a real proxy and store."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.cli.label_tui import Action, choose
from proxal.orchestrator_service.cli.main import main
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.rpc.servicer import OrchestratorServicer
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.runtime.server import ServerSettings, start_server
from proxal.store import Store

from tests.conftest import add_session_pool

N, DIM = 120, 8
CLASSES = ["alpha", "beta", "gamma"]
MANY = [*CLASSES, *(f"topic-{n:02d}" for n in range(9))]  # 12 classes: line mode
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store]]:
    root = tmp_path_factory.mktemp("label-cli")
    store = Store(str(root / "store"))
    add_session_pool(store, "cli", CLASSES, N, dim=DIM, seed=1)
    with ServiceProcess("proxy_service", store.uri, log_path=root / "proxy.log") as proxy:
        servicer = OrchestratorServicer(Sessions(store, ProxyClient(proxy.address)))
        running = start_server(
            ServerSettings(port=0),
            lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
            ["proxal.orchestrator.v1.OrchestratorService"],
        )
        yield running.address, store
        running.stop(0)


def _create(address: str, session: str, classes: list[str], batch_size: int = 3) -> None:
    with grpc.insecure_channel(address) as channel:
        pb_grpc.OrchestratorServiceStub(channel).CreateSession(
            pb.CreateSessionRequest(
                session=session, pool="cli", classes=classes, batch_size=batch_size
            )
        )


class Terminal:
    """A command on a pseudo-terminal: read what it shows, type keys."""

    def __init__(self, argv: list[str]):
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}", "COLUMNS": "100"}
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.screen = ""
        self.seen = 0

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait until `pattern` appears in output not matched before; returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.screen, self.seen)
            if match:
                self.seen = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not shown; screen:\n{self.screen[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.screen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the program exited and closed the terminal
                    if self.process.poll() is not None and not re.search(pattern, self.screen):
                        raise AssertionError(f"exited before {pattern!r}:\n{self.screen}") from None

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> int:
        code = self.process.wait(30)
        os.close(self.master)
        return code


def _label(address: str, session: str) -> Terminal:
    argv = [sys.executable, "-m", "proxal.orchestrator_service", "label", session]
    return Terminal([*argv, "--orchestrator", address, "--annotator", "pat"])


def test_a_person_labels_skips_undoes_and_quits(served: tuple[str, Store]) -> None:
    address, store = served
    _create(address, "tty", CLASSES)
    term = _label(address, "tty")
    term.expect(r"proxal label · tty · pat · labels 0")
    first = int(term.expect(r"\n#(\d+)\r?\n").group(1))
    term.expect(r"1 alpha\s+2 beta\s+3 gamma")
    term.expect(r"s skip · u undo · q quit · press a number")
    term.type("1")  # one key, no Enter
    term.expect(rf"#{first} → alpha")
    second = int(term.expect(r"\n#(\d+)\r?\n").group(1))
    assert second != first
    term.type("s")
    term.expect(rf"#{second} skipped")
    term.type("u")  # the skip is undone and the item comes back
    term.expect(rf"undone: #{second} skip")
    assert int(term.expect(r"\n#(\d+)\r?\n").group(1)) == second
    term.type("7")  # not a class: says so, stays on the item
    term.expect(r"no class 7: pick 1-3")
    term.type("2")
    term.expect(rf"#{second} → beta")
    term.type("q")
    term.expect(r"Bye: 2 labels; 1 unlabelled item\(s\) handed back")
    assert term.close() == 0
    ids, labels = store.read_labels("tty")
    assert dict(zip(ids.tolist(), labels, strict=True)) == {first: "alpha", second: "beta"}
    events = store.read_label_events("tty")
    assert [e.kind for e in events] == ["label", "skip", "undo", "label"]
    assert {e.annotator for e in events} == {"pat"}
    with grpc.insecure_channel(address) as channel:
        status = pb_grpc.OrchestratorServiceStub(channel).Status(pb.StatusRequest(session="tty"))
    assert status.leased == 0  # quitting handed the rest of the batch back


def test_many_classes_are_picked_by_number_or_name(served: tuple[str, Store]) -> None:
    address, store = served
    _create(address, "lines", MANY, batch_size=2)
    term = _label(address, "lines")
    item = int(term.expect(r"\n#(\d+)\r?\n").group(1))
    term.expect(r"number or name, Enter\s+label> ")
    term.type("topic\n")  # ambiguous: lists the matches with their numbers
    term.expect(r"9 classes match 'topic': 4 topic-00")
    term.type("99\n")
    term.expect(r"no class 99: pick 1-12")
    term.type("GAM\n")  # a unique part of a name, any case
    term.expect(rf"#{item} → gamma")
    nxt = int(term.expect(r"\n#(\d+)\r?\n").group(1))
    term.type("5\n")
    term.expect(rf"#{nxt} → topic-01")
    term.type("q\n")
    term.expect(r"Bye: 2 labels")
    assert term.close() == 0
    ids, labels = store.read_labels("lines")
    assert dict(zip(ids.tolist(), labels, strict=True)) == {item: "gamma", nxt: "topic-01"}


def test_choose_reads_answers() -> None:
    assert choose("2", CLASSES)[0].label == "beta"  # type: ignore[union-attr]
    assert choose(" Alpha ", CLASSES)[0].label == "alpha"  # type: ignore[union-attr]
    assert choose("q", CLASSES)[0].kind == "quit"  # type: ignore[union-attr]
    assert choose("a", CLASSES) == (None, "3 classes match 'a': 1 alpha  2 beta  3 gamma")
    assert choose("", CLASSES) == (None, "")
    assert choose("0", CLASSES) == (None, "no class 0: pick 1-3")
    # Enter alone takes the suggestion; anything typed still wins over it
    assert choose("", CLASSES, "gamma") == (Action("label", "gamma"), "")
    assert choose("\n", CLASSES, "gamma") == (Action("label", "gamma"), "")
    assert choose("1", CLASSES, "gamma") == (Action("label", "alpha"), "")
    assert choose("s", CLASSES, "gamma") == (Action("skip"), "")


def test_enter_takes_the_suggestion(served: tuple[str, Store]) -> None:
    """Once labels cover two classes the items show the proxy's suggestion; Enter takes it."""
    address, store = served
    _create(address, "hint", CLASSES, batch_size=2)
    gold = store.pool_rows("cli").column("label").to_pylist()
    with grpc.insecure_channel(address) as channel:
        pb_grpc.OrchestratorServiceStub(channel).ImportLabels(
            pb.ImportLabelsRequest(
                session="hint",
                labels=[pb.Label(id=i, label=gold[i]) for i in range(20)],
                request_id="hint-import",
            )
        )
    term = _label(address, "hint")
    item = int(term.expect(r"\n#(\d+)\r?\n").group(1))
    shown = term.expect(r"suggested: (\w+) \((0\.\d\d|1\.00)\) · Enter takes it")
    assert shown.group(1) in CLASSES and float(shown.group(2)) > 0
    term.type("\r")  # Enter, nothing else
    term.expect(rf"#{item} → {shown.group(1)}")
    term.type("q")
    term.expect(r"Bye: 21 labels")
    assert term.close() == 0
    ids, labels = store.read_labels("hint")
    assert dict(zip(ids.tolist(), labels, strict=True))[item] == shown.group(1)


def test_session_and_labels_commands(
    served: tuple[str, Store], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, store = served
    client = ["--orchestrator", address, "--annotator", "ops"]
    assert main(["session", "create", "files", "--pool", "cli", "--batch-size", "5", *client]) == 0
    assert "created files on cli/v1: 3 classes" in capsys.readouterr().out
    gold = store.pool_rows("cli").column("label").to_pylist()
    src = tmp_path / "in.csv"
    src.write_text("id,text,label\n" + "".join(f"{i},t,{gold[i]}\n" for i in range(30)))
    assert main(["labels", "import", "files", str(src), *client]) == 0
    assert "imported 30 of 30 labels into files" in capsys.readouterr().out
    studio = tmp_path / "out.json"
    assert (
        main(["labels", "export", "files", "--format", "label-studio", "-o", str(studio), *client])
        == 0
    )
    assert f"wrote 30 labels of session files to {studio} (label-studio)" in capsys.readouterr().out
    tasks = json.loads(studio.read_text())
    assert len(tasks) == 30 and tasks[0]["data"]["proxal_id"] == 0
    assert tasks[0]["annotations"][0]["result"][0]["value"]["choices"] == [gold[0]]
    # a Label Studio file imports into another session unchanged
    assert main(["session", "create", "copy", "--pool", "cli", *client]) == 0
    assert main(["labels", "import", "copy", str(studio), *client]) == 0
    assert store.read_labels("copy")[1] == store.read_labels("files")[1]
    capsys.readouterr()
    assert main(["session", "status", "files", "--json", *client]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["labels"] == 30 and status["remaining"] == N - 30
    assert status["estimated_accuracy"] is not None and status["estimated_accuracy"] > 0.8
    # a broken file is refused with the line at fault, and nothing is imported
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 40, "label": "alpha"}\n{"id": "x", "label": "beta"}\n')
    assert main(["labels", "import", "files", str(bad), *client]) == 2
    assert "line 2: id 'x' is not an integer id" in capsys.readouterr().err
    assert len(store.read_labels("files")[0]) == 30
    # to stdout, the data alone goes to stdout and the note to stderr
    assert main(["labels", "export", "files", *client]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 30
    assert "wrote 30 labels of session files to stdout (jsonl)" in captured.err
    # -o x.csv writes CSV (from the suffix), which imports back as it is
    as_csv = tmp_path / "out.csv"
    assert main(["labels", "export", "files", "-o", str(as_csv), *client]) == 0
    assert f"wrote 30 labels of session files to {as_csv} (csv)" in capsys.readouterr().out
    assert as_csv.read_text().splitlines()[0].startswith("id,")
    assert main(["labels", "import", "files", str(as_csv), "--overwrite", *client]) == 0
    assert "imported 30 of 30 labels" in capsys.readouterr().out
    assert main(["labels", "export", "files", "-o", str(tmp_path / "out.xyz"), *client]) == 2
    assert "cannot tell the format of 'out.xyz'" in capsys.readouterr().err
    # server-side refusals come back with their status code (user input: exit 2)
    assert main(["labels", "export", "nosuch", *client]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


def test_session_create_takes_the_classifier_ups_and_asvp_settings(
    served: tuple[str, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    address, store = served
    client = ["--orchestrator", address]
    args = ["session", "create", "tuned", "--pool", "cli", "--c", "0.5", "--balanced"]
    assert main([*args, "--ups", "--ups-gamma", "0.5", *client]) == 0
    assert "created tuned on cli/v1: 3 classes" in capsys.readouterr().out
    config = store.get_session("tuned").config
    assert config["classifier_spec"]["c"] == 0.5 and config["classifier_spec"]["balanced"]
    assert config["ups"]["gamma"] == 0.5
    assert main(["session", "status", "tuned", "--json", *client]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["lineage"] == "v1" and status["asvp"] is None
    bad = ["session", "create", "bad", "--pool", "cli", "--ups", "--ups-gamma", "2", *client]
    assert main(bad) == 2
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    # this server has no --encoder: ASVP is refused at creation, and says what to pass
    assert main(["session", "create", "nope", "--pool", "cli", "--asvp", *client]) == 2
    err = capsys.readouterr().err
    assert "FAILED_PRECONDITION" in err and "--encoder" in err
    names = {s.session for s in store.list_sessions()}
    assert "tuned" in names and not names & {"bad", "nope"}
    cold = ["session", "create", "cold", "--pool", "cli", "--initial-batch", "kmeans"]
    assert main([*cold, "--class-balanced", *client]) == 0
    assert "kmeans initial batch, class-balanced batches" in capsys.readouterr().out
    config = store.get_session("cold").config
    assert config["initial_batch"] == "kmeans" and config["class_balanced"] is True
    with pytest.raises(SystemExit) as exit_info:  # argparse: one usage line, exit 2
        main(["session", "create", "x", "--pool", "cli", "--initial-batch", "dbscan", *client])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_session_list_delete_import_and_coverage_commands(
    served: tuple[str, Store], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, store = served
    client = ["--orchestrator", address, "--annotator", "ops"]
    # an unknown strategy is refused at creation, listing the valid ones
    assert main(["session", "create", "typo", "--pool", "cli", "--strategy", "margn", *client])
    assert "unknown strategy 'margn'; valid strategies: random, least_confidence, margin" in (
        capsys.readouterr().err
    )
    many = ",".join(MANY[:11])
    assert main(["session", "create", "cov", "--pool", "cli", "--classes", many, *client]) == 0
    assert "11 classes, strategy margin, classifier logreg" in capsys.readouterr().out
    gold = store.pool_rows("cli").column("label").to_pylist()
    rows = [i for i in range(N) if gold[i] in ("alpha", "beta")][:12]
    src = tmp_path / "two.jsonl"
    src.write_text("".join(json.dumps({"id": i, "label": gold[i]}) + "\n" for i in rows))
    assert main(["labels", "import", "cov", str(src), *client]) == 0
    capsys.readouterr()
    # importing again without --overwrite says why nothing was written
    assert main(["labels", "import", "cov", str(src), *client]) == 0
    assert capsys.readouterr().out == (
        "imported 0 of 12 labels into cov; 12 already labelled: pass --overwrite to replace them\n"
    )
    # the estimate says which classes it covers, in text and JSON
    assert main(["session", "status", "cov", *client]) == 0
    text = capsys.readouterr().out
    assert "class_coverage: 2 of 11 classes labelled" in text
    assert re.search(r"estimated_accuracy: \d\.\d\d on the 2 classes with 2\+ labels only", text)
    assert main(["session", "status", "cov", "--json", *client]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["labeled_classes"], status["classes"], status["accuracy_classes"]) == (2, 11, 2)
    assert status["class_coverage"] == "2 of 11 classes labelled"
    # list, then delete: refused while it has labels, done with --force, saying what went
    assert main(["session", "list", *client]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"\ncov\s+cli\s+margin\s+11\s+12\s+0\n", listed), listed
    assert main(["session", "list", "--json", *client]) == 0
    assert "cov" in {row["session"] for row in json.loads(capsys.readouterr().out)}
    assert main(["session", "delete", "cov", *client]) == 2
    assert "has 12 label(s); deleting it deletes them" in capsys.readouterr().err
    assert len(store.read_labels("cov")[0]) == 12
    assert main(["session", "delete", "cov", "--force", *client]) == 0
    assert capsys.readouterr().out == (
        "deleted session cov: 12 labels and 0 skips (12 label-log events), 0 lease events, "
        "0 rounds\n"
    )
    assert main(["session", "delete", "cov", *client]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


def test_a_dead_orchestrator_is_one_line_and_exit_2_within_the_connect_wait(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from proxal.orchestrator_service.cli import label as label_cli

    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(label_cli, "CONNECT_SECONDS", 0.5)
    start = time.monotonic()
    assert main(["session", "status", "s", "--orchestrator", f"127.0.0.1:{port}"]) == 2
    assert time.monotonic() - start < 30  # not the 60 s a call's retries would take
    assert capsys.readouterr().err.splitlines() == [
        f"proxal: cannot reach the orchestrator at 127.0.0.1:{port} (--orchestrator, env "
        "PROXAL_ORCHESTRATOR) within 0.5 s; is `proxal serve` running there?"
    ]


def test_labels_export_to_parquet_and_a_hugging_face_dataset(
    served: tuple[str, Store], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, store = served
    client = ["--orchestrator", address, "--annotator", "ops"]
    assert main(["session", "create", "sets", "--pool", "cli", *client]) == 0
    gold = store.pool_rows("cli").column("label").to_pylist()
    src = tmp_path / "in.csv"
    src.write_text("id,text,label\n" + "".join(f"{i},t,{gold[i]}\n" for i in range(12)))
    assert main(["labels", "import", "sets", str(src), *client]) == 0
    capsys.readouterr()
    # -o x.parquet writes Parquet (from the suffix); it imports back as it is
    out = tmp_path / "labels.parquet"
    assert main(["labels", "export", "sets", "-o", str(out), *client]) == 0
    assert f"wrote 12 labels of session sets to {out} (parquet)" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == list(range(12))
    assert table.column("label").to_pylist() == gold[:12]
    assert json.loads(table.schema.metadata[b"proxal.classes"]) == CLASSES
    assert main(["labels", "import", "sets", str(out), "--overwrite", *client]) == 0
    assert "imported 12 of 12 labels" in capsys.readouterr().out
    # --format hf unpacks a dataset directory that `datasets.load_dataset` reads
    dataset = tmp_path / "dataset"
    assert main(["labels", "export", "sets", "--format", "hf", "-o", str(dataset), *client]) == 0
    assert f"wrote 12 labels of session sets to {dataset} (hf)" in capsys.readouterr().out
    assert sorted(p.name for p in dataset.rglob("*") if p.is_file()) == ["README.md", "train.jsonl"]
    datasets = pytest.importorskip("datasets")
    train = datasets.load_dataset(str(dataset), cache_dir=str(tmp_path / "cache"))["train"]
    assert train.features["label"].names == CLASSES
    assert train["label"] == [CLASSES.index(x) for x in gold[:12]]
    # hf needs a directory: one line and exit 2, before asking the server
    assert main(["labels", "export", "sets", "--format", "hf", *client]) == 2
    assert "pass -o DIRECTORY" in capsys.readouterr().err
    assert main(["labels", "export", "sets", "--format", "hf", "-o", str(out), *client]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
