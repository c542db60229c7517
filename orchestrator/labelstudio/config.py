"""A Label Studio labelling config (XML) as the one Choices control proxal labels with."""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from proxal.runtime.errors import InvalidArgumentError


@dataclass(frozen=True)
class ChoicesConfig:
    """The Choices control: `from_name` (its name), `to_name` (the object tag it labels),
    `data_field` (the task data key that tag shows, from its value="$field") and `classes`
    (the Choice values, in config order)."""

    from_name: str
    to_name: str
    data_field: str
    classes: tuple[str, ...]


def _tag(element: Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def parse_label_config(xml: object) -> ChoicesConfig:
    """The config's single <Choices> control; InvalidArgumentError for anything else (not
    XML, no Choices, several, no Choice values, a toName that names no object tag)."""
    if not isinstance(xml, str) or not xml.strip():
        raise InvalidArgumentError("the label config is missing: pass the project's XML config")
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise InvalidArgumentError(f"the label config is not valid XML: {exc}") from None
    controls = [e for e in root.iter() if _tag(e) == "Choices"]
    if len(controls) != 1:
        found = "no <Choices> control" if not controls else f"{len(controls)} <Choices> controls"
        raise InvalidArgumentError(
            f"the label config has {found}: proxal classifies texts with exactly one "
            '<Choices name="..." toName="..."> holding a <Choice value="..."/> per class'
        )
    choices = controls[0]
    from_name, to_name = choices.get("name", ""), choices.get("toName", "")
    if not from_name or not to_name:
        raise InvalidArgumentError("the <Choices> control needs both name and toName")
    classes = tuple(c.get("value", "") for c in choices.iter() if _tag(c) == "Choice")
    if len(classes) < 2 or not all(classes) or len(set(classes)) != len(classes):
        raise InvalidArgumentError(
            f"<Choices name={from_name!r}> needs at least two distinct, non-empty Choice "
            f"values; it has {list(classes)}"
        )
    target = next((e for e in root.iter() if e is not choices and e.get("name") == to_name), None)
    value = target.get("value", "") if target is not None else ""
    if not value.startswith("$") or len(value) < 2:
        raise InvalidArgumentError(
            f'<Choices toName={to_name!r}> names no object tag with value="$field" (e.g. '
            f'<Text name="{to_name}" value="$text"/>)'
        )
    return ChoicesConfig(from_name, to_name, value[1:], classes)
