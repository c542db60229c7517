"""Label Studio webhook payloads as the annotations they create, change or delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxal.orchestrator_service.labelstudio.config import ChoicesConfig
from proxal.orchestrator_service.labelstudio.mapping import annotator
from proxal.runtime.errors import InvalidArgumentError

CREATED, UPDATED = "ANNOTATION_CREATED", "ANNOTATION_UPDATED"
BULK_CREATED, DELETED = "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"
TRAINING = "START_TRAINING"
ONE_DELETED = "ANNOTATION_DELETED"  # label-studio-ml-backend's TRAIN_EVENTS name it
ACTIONS = (CREATED, UPDATED, BULK_CREATED, DELETED, ONE_DELETED, TRAINING)


@dataclass(frozen=True)
class Annotation:
    """One annotation: its id, task, chosen class (None for a skipped task: Label
    Studio's was_cancelled), who made it and when it last changed."""

    id: int
    task: dict[str, Any]
    choice: str | None
    annotator: str
    updated_at: str


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{what} must be an integer id, got {value!r}")
    return value


def _choice(raw: dict[str, Any], config: ChoicesConfig) -> str:
    """The one class an annotation chose in the config's Choices control."""
    for result in raw.get("result") or []:
        if not isinstance(result, dict) or result.get("from_name") != config.from_name:
            continue
        chosen = (result.get("value") or {}).get("choices")
        if isinstance(chosen, list) and len(chosen) == 1 and isinstance(chosen[0], str):
            return chosen[0]
        raise InvalidArgumentError(
            f"annotation {raw.get('id')}: choose exactly one class, got {chosen!r}"
        )
    raise InvalidArgumentError(
        f"annotation {raw.get('id')} has no choice in <Choices name={config.from_name!r}>"
    )


def annotated(payload: dict[str, Any], config: ChoicesConfig) -> list[Annotation]:
    """The annotations of a CREATED, UPDATED or bulk CREATED event, paired with their
    tasks (by the annotation's task id in a bulk event)."""
    raws, tasks = payload.get("annotation"), payload.get("task")
    if isinstance(raws, dict) and isinstance(tasks, dict):
        raws, tasks = [raws], [tasks]
    if not isinstance(raws, list) or not isinstance(tasks, list):
        raise InvalidArgumentError("the event needs 'annotation' and 'task' objects")
    by_id = {t.get("id"): t for t in tasks if isinstance(t, dict)}
    out = []
    for raw in raws:
        if not isinstance(raw, dict):
            raise InvalidArgumentError("an annotation must be an object")
        task = by_id.get(raw.get("task")) or (tasks[0] if len(tasks) == 1 else None)
        if not isinstance(task, dict):
            raise InvalidArgumentError(f"annotation {raw.get('id')}: its task is not in the event")
        cancelled = bool(raw.get("was_cancelled"))
        out.append(
            Annotation(
                _int(raw.get("id"), "annotation.id"),
                task,
                None if cancelled else _choice(raw, config),
                annotator(raw.get("completed_by")),
                str(raw.get("updated_at") or raw.get("created_at") or ""),
            )
        )
    return out


def deleted(payload: dict[str, Any]) -> list[int]:
    """The ids of an ANNOTATIONS_DELETED event ("annotations": [{"id": ...}]), or of an
    ANNOTATION_DELETED one ("annotation": {"id": ...})."""
    raws = payload.get("annotations", [payload.get("annotation")])
    if not isinstance(raws, list) or not raws:
        raise InvalidArgumentError("the event needs 'annotations': [{'id': ...}]")
    return [_int(r.get("id") if isinstance(r, dict) else r, "annotations[].id") for r in raws]
