"""The ML backend's behaviour, route by route, over an `Orchestrator` (a proxal session
per Label Studio project). Takes and returns JSON-shaped dicts; raises proxal's errors."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from proxal.orchestrator_service.labelstudio import events
from proxal.orchestrator_service.labelstudio.config import ChoicesConfig, parse_label_config
from proxal.orchestrator_service.labelstudio.mapping import (
    TaskRef,
    prediction,
    project_id,
    request_id,
    session_name,
    task_ref,
)
from proxal.orchestrator_service.labelstudio.state import AnnotationIndex
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError

CHUNK = 1000  # Predict and LookupItems take at most this many per request


@dataclass(frozen=True)
class SessionSettings:
    """How the backend creates a project's session (`proxal ls-backend` flags)."""

    pool: str
    split: str = "train"
    strategy: str = "margin"
    batch_size: int = 10
    embedding_version: str = ""


@dataclass(frozen=True)
class SessionInfo:
    name: str
    pool: str
    split: str
    classes: tuple[str, ...]
    embedding_version: str = ""
    rounds: int = 0
    labels: int = 0

    @property
    def model_version(self) -> str:
        """The name Predict gives the session's current proxy (orchestrator/sessions/
        suggest.py `model_version`; a test keeps the two equal)."""
        return f"{self.name}@r{self.rounds}/l{self.labels}/{self.embedding_version}"


@dataclass(frozen=True)
class Guess:
    """The proxy's guess for one item: label, its probability, acquisition score."""

    label: str
    probability: float
    score: float


@dataclass(frozen=True)
class Predicted:
    guesses: list[Guess | None]  # in the order asked; None where the proxy has no guess
    model_version: str
    note: str = ""


@dataclass(frozen=True)
class Written:
    accepted: int
    total_labels: int
    replayed: bool = False
    already_labeled: int = 0
    note: str = ""


class Orchestrator(Protocol):
    """The OrchestratorService calls the backend needs (rpc/ls_client.py)."""

    def find_session(self, name: str) -> SessionInfo | None: ...
    def create_session(
        self, name: str, settings: SessionSettings, classes: Sequence[str]
    ) -> SessionInfo: ...
    def predict(self, session: str, ids: Sequence[int]) -> Predicted: ...
    def lookup(self, session: str, texts: Sequence[str]) -> list[int]: ...
    def import_labels(
        self, session: str, labels: Sequence[tuple[int, str, str]], request: str, overwrite: bool
    ) -> Written: ...
    def remove_labels(
        self, session: str, ids: Sequence[int], request: str, annotator: str
    ) -> Written: ...
    def train(self, session: str) -> str: ...


def _body(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    return payload


class LabelStudioBackend:
    """Label Studio projects labelled into proxal sessions named "ls-<project id>"."""

    def __init__(
        self, orchestrator: Orchestrator, settings: SessionSettings, index: AnnotationIndex
    ):
        self.orchestrator = orchestrator
        self.settings = settings
        self.index = index
        self._lock = threading.Lock()  # one find-or-create at a time

    def session(self, project: str, config: ChoicesConfig, create: bool) -> SessionInfo:
        """The project's session, created if `create` and missing; NotFoundError for a
        project never set up, FailedPreconditionError when its classes or pool differ."""
        name = session_name(project)
        with self._lock:
            info = self.orchestrator.find_session(name)
            if info is None and not create:
                raise NotFoundError(
                    f"Label Studio project {project} is not set up: connect the ML backend to "
                    f"it (POST /setup creates session {name!r})"
                )
            if info is None:
                info = self.orchestrator.create_session(name, self.settings, config.classes)
        if set(info.classes) != set(config.classes) or info.pool != self.settings.pool:
            raise FailedPreconditionError(
                f"session {name!r} labels {sorted(info.classes)} of pool {info.pool!r}; the "
                f"project's config has {sorted(config.classes)} and this backend serves pool "
                f"{self.settings.pool!r}: make the <Choice> values match, or delete the session"
            )
        return info

    def setup(self, payload: object) -> dict[str, Any]:
        """POST /setup {project, schema, ...} -> {"model_version"}; creates the session."""
        body = _body(payload)
        config = parse_label_config(body.get("schema") or body.get("label_config"))
        info = self.session(project_id(body.get("project")), config, create=True)
        return {"model_version": info.model_version}

    def items(self, session: str, refs: Sequence[TaskRef]) -> list[int | None]:
        """Each task's pool id (by proxal id, else by exact text); None if not in the split."""
        texts = [r.text for r in refs if r.item is None and r.text is not None]
        found: list[int] = []
        for start in range(0, len(texts), CHUNK):
            found += self.orchestrator.lookup(session, texts[start : start + CHUNK])
        looked_up = iter(found)
        out: list[int | None] = []
        for ref in refs:
            item = ref.item if ref.item is not None else next(looked_up)
            out.append(item if item >= 0 else None)
        return out

    def predict(self, payload: object) -> dict[str, Any]:
        """POST /predict {tasks, project, label_config} -> {"results": one per task}."""
        body = _body(payload)
        config = parse_label_config(body.get("label_config"))
        info = self.session(project_id(body.get("project")), config, create=False)
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise InvalidArgumentError("'tasks' must be a list of tasks")
        ids = self.items(info.name, [task_ref(t, config) for t in tasks])
        known = list(dict.fromkeys(i for i in ids if i is not None))  # tasks may share an item
        guesses: dict[int, Guess | None] = {}
        version = info.model_version
        for start in range(0, len(known), CHUNK):
            chunk = known[start : start + CHUNK]
            predicted = self.orchestrator.predict(info.name, chunk)
            guesses.update(zip(chunk, predicted.guesses, strict=True))
            version = predicted.model_version
        results = []
        for item in ids:
            guess = guesses.get(item) if item is not None else None
            label, score = (guess.label, guess.score) if guess else (None, None)
            results.append(prediction(config, label, score, version))
        return {"results": results, "model_version": version}

    def webhook(self, payload: object) -> dict[str, Any]:
        """POST /webhook: an annotation event written to the session's label log."""
        body = _body(payload)
        action = body.get("action")
        if action not in events.ACTIONS:
            return {"status": "Unknown event", "action": action}
        project = project_id(body.get("project"))
        if action in (events.DELETED, events.ONE_DELETED):
            return self._delete(project, events.deleted(body))
        raw_project = body.get("project")
        raw_config = raw_project.get("label_config") if isinstance(raw_project, dict) else None
        config = parse_label_config(raw_config)
        info = self.session(project, config, create=False)
        if action == events.TRAINING:
            return {"status": "ok", "job_id": self.orchestrator.train(info.name)}
        return self._annotate(project, info, config, events.annotated(body, config), action)

    def train(self, payload: object) -> dict[str, Any]:
        """POST /train (Label Studio's older call) {project, label_config}: queue a successor."""
        body = _body(payload)
        config = parse_label_config(body.get("label_config"))
        info = self.session(project_id(body.get("project")), config, create=False)
        return {"status": "ok", "job_id": self.orchestrator.train(info.name)}

    def _annotate(
        self,
        project: str,
        info: SessionInfo,
        config: ChoicesConfig,
        annotations: list[events.Annotation],
        action: str,
    ) -> dict[str, Any]:
        """Import the annotations' labels, all or none: bad classes and unknown tasks are
        refused before anything is written."""
        chosen = [a for a in annotations if a.choice is not None]
        wrong = sorted({str(a.choice) for a in chosen} - set(info.classes))
        if wrong:
            raise InvalidArgumentError(
                f"choice(s) {wrong} are not classes of session {info.name!r}: {list(info.classes)}"
            )
        ids = self.items(info.name, [task_ref(a.task, config) for a in chosen])
        unknown = [a.task.get("id") for a, i in zip(chosen, ids, strict=True) if i is None]
        if unknown:
            raise NotFoundError(
                f"task(s) {unknown} are not items of pool {info.pool!r} split {info.split!r} "
                f"(no data.proxal_id and no item with that exact '{config.data_field}')"
            )
        if not chosen:
            return {"status": "ok", "written": 0, "note": "skipped tasks are not labels"}
        items = [i for i in ids if i is not None]
        latest = {i: (i, str(a.choice), a.annotator) for i, a in zip(items, chosen, strict=True)}
        labels = list(latest.values())  # one label per item: the event's last annotation
        kind = "upd" if action == events.UPDATED else "new"
        stamp = ";".join(f"{a.id}@{a.updated_at}" for a in chosen)
        request = request_id(kind, project, chosen[0].id, stamp)
        written = self.orchestrator.import_labels(
            info.name, labels, request, overwrite=action == events.UPDATED
        )
        self.index.record(project, [(a.id, i) for a, i in zip(chosen, items, strict=True)])
        return _reply(written)

    def _delete(self, project: str, annotations: list[int]) -> dict[str, Any]:
        """Remove the labels the deleted annotations gave; NotFoundError if none is known."""
        items = self.index.items(project, annotations)
        if not items:
            raise NotFoundError(
                f"annotation(s) {annotations} of project {project} were never written to proxal "
                "by this backend (a skipped task, or another backend's state file)"
            )
        keys = sorted(items)
        digest = hashlib.sha256(",".join(map(str, keys)).encode()).hexdigest()
        request = request_id("del", project, keys[0], digest)
        written = self.orchestrator.remove_labels(
            session_name(project), sorted(set(items.values())), request, "ls"
        )
        unknown = sorted(set(annotations) - set(items))
        return _reply(written) | ({"unknown_annotations": unknown} if unknown else {})


def _reply(written: Written) -> dict[str, Any]:
    return {
        "status": "ok",
        "written": written.accepted,
        "total_labels": written.total_labels,
        "replayed": written.replayed,
        "already_labeled": written.already_labeled,
        "note": written.note,
    }
