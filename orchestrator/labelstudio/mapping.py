"""Label Studio's JSON to proxal's terms and back: project ids, task references, the score
map, predictions, and webhook events as label operations with derived request ids.

Shapes (Label Studio 1.23, label_studio/ml/api_connector.py and webhooks/models.py):
- /setup and /predict name the project "<id>.<created_at seconds>"; webhooks send the
  project object, {"id": <id>, "label_config": ...}.
- A task is {"id": <task id>, "data": {...}}; proxal reads `data.proxal_id` (what proxal's
  Label Studio export writes) and else `data[<the Choices' object tag field>]`, the text.
- ANNOTATION_CREATED / ANNOTATION_UPDATED carry "annotation" (id, result, completed_by,
  updated_at, was_cancelled) and "task"; ANNOTATIONS_CREATED carries lists of both;
  ANNOTATIONS_DELETED carries only "annotations": [{"id": ...}].
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from proxal.orchestrator_service.labelstudio.config import ChoicesConfig
from proxal.runtime.errors import InvalidArgumentError

ID_FIELD = "proxal_id"
_PROJECT = re.compile(r"(\d{1,18})(?:\.\d+)?")
_ANNOTATOR_CHARS = re.compile(r"[^A-Za-z0-9._@-]")


def project_id(value: object) -> str:
    """The project id from "<id>.<timestamp>", "<id>", an int or {"id": <id>}."""
    if isinstance(value, dict):
        value = value.get("id")
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    match = _PROJECT.fullmatch(text.strip())
    if match is None:
        raise InvalidArgumentError(f"'project' must be Label Studio's project id, got {value!r}")
    return match.group(1)


def session_name(project: str) -> str:
    """The session a project labels into: "ls-<project id>" (a valid proxal name)."""
    return f"ls-{project}"


def ls_score(score: float) -> float:
    """proxal's acquisition score (higher = more informative) as Label Studio's prediction
    score (lower = shown first by uncertainty sampling): the logistic 1 / (1 + e^score),
    strictly decreasing from (-inf, inf) onto (0, 1); 0 maps to 0.5."""
    if score >= 0:
        e = math.exp(-score)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(score))


@dataclass(frozen=True)
class TaskRef:
    """A task's pool item: `item` from data.proxal_id, else `text` to look up."""

    task_id: int | None
    item: int | None
    text: str | None


def task_ref(task: object, config: ChoicesConfig) -> TaskRef:
    """The pool item a task shows; InvalidArgumentError for a task with neither field."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise InvalidArgumentError("a task must be an object with a 'data' object")
    data, raw_id = task["data"], task.get("id")
    task_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    item = data.get(ID_FIELD)
    if item is not None:
        if isinstance(item, bool) or not isinstance(item, int | str) or not str(item).isdigit():
            raise InvalidArgumentError(f"task {task_id}: data.{ID_FIELD} {item!r} is not an id")
        return TaskRef(task_id, int(item), None)
    text = data.get(config.data_field)
    if not isinstance(text, str):
        raise InvalidArgumentError(
            f"task {task_id}: data has neither '{ID_FIELD}' nor a text in "
            f"'{config.data_field}' (the field of <Choices toName={config.to_name!r}>)"
        )
    return TaskRef(task_id, None, text)


def prediction(
    config: ChoicesConfig, label: str | None, score: float | None, model_version: str
) -> dict[str, Any]:
    """One task's prediction: the predicted choice and its score mapped by `ls_score`; no
    result and score 0.5 (neutral) where the proxy has no guess (not fitted yet, or the
    task is not in the session's split)."""
    result = []
    if label is not None:
        result = [
            {
                "from_name": config.from_name,
                "to_name": config.to_name,
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
    mapped = 0.5 if score is None or not math.isfinite(score) else ls_score(score)
    return {"result": result, "score": mapped, "model_version": model_version}


def annotator(completed_by: object) -> str:
    """The annotator proxal records: "ls.<user id or email>" (":" is not allowed in
    annotator names)."""
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("email") or completed_by.get("id")
    who = str(completed_by) if isinstance(completed_by, int | str) else "unknown"
    return ("ls." + _ANNOTATOR_CHARS.sub("-", who.strip()))[:64]


def request_id(kind: str, project: str, annotation: int, updated_at: str) -> str:
    """A write's request id from the annotation id and its updated_at: Label Studio's
    retries of one event get the same id, so the orchestrator counts them once."""
    digest = hashlib.sha256(updated_at.encode()).hexdigest()[:16]
    return f"ls.{kind}.p{project}.a{annotation}.{digest}"
