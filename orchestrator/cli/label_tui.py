"""`proxal label SESSION`: label a session's items in a terminal.

Shows the text, the numbered classes and the proxy's suggestion for the item, if it has
one ("suggested: beta (0.83)"): Enter alone takes it. With at most 9 classes one key
labels an item; with more, type the class number or part of its name and press Enter.
`s` skips, `u` undoes your last label or skip (the item comes back to label again), `q`
quits and hands your unlabelled items back to the pool. Every label is committed before
the next item is shown; a dropped connection is retried with the same request id, so
nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import termios
import textwrap
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from proxal.orchestrator_service.rpc.client import Client, Suggestion, rpc_status
from proxal.runtime.errors import FailedPreconditionError, ProxalError

KEY_MODE_MAX_CLASSES = 9
HELP = "s skip · u undo · q quit"


@dataclass
class Pending:
    id: int
    text: str
    suggestion: Suggestion | None = None


@dataclass(frozen=True)
class Action:
    kind: str  # "label" | "skip" | "undo" | "quit"
    label: str = ""


def choose(
    answer: str, classes: list[str], suggested: str | None = None
) -> tuple[Action | None, str]:
    """What a typed answer means: an action, or None and a message. An empty answer (Enter)
    takes the `suggested` class, if there is one."""
    answer = answer.strip()
    if not answer and suggested is not None:
        return Action("label", suggested), ""
    if answer in ("s", "u", "q"):
        return Action({"s": "skip", "u": "undo", "q": "quit"}[answer]), ""
    if answer.isdigit():
        n = int(answer)
        if 1 <= n <= len(classes):
            return Action("label", classes[n - 1]), ""
        return None, f"no class {n}: pick 1-{len(classes)}"
    if not answer:
        return None, ""
    exact = [c for c in classes if c.lower() == answer.lower()]
    matches = exact or [c for c in classes if answer.lower() in c.lower()]
    if len(matches) == 1:
        return Action("label", matches[0]), ""
    if not matches:
        return None, f"no class matches {answer!r}"
    listed = "  ".join(f"{classes.index(c) + 1} {c}" for c in matches[:12])
    return None, f"{len(matches)} classes match {answer!r}: {listed}"


class LabelApp:
    """The terminal loop over one session, as one annotator."""

    def __init__(self, client: Client, session: str, out: TextIO, keys: Iterator[str]):
        self.client = client
        self.session = session
        self.out = out
        self.keys = keys  # one key per item in key mode; one line per item in line mode
        info = client.get_session(session)
        self.classes = list(info.classes)
        self.key_mode = len(self.classes) <= KEY_MODE_MAX_CLASSES
        self.queue: list[Pending] = []
        self.labels = info.labels
        self.accuracy: float | None = None
        self.accuracy_classes = 0  # the classes the estimate covers
        self.message = ""

    def run(self) -> int:
        """Label until the pool is done or the annotator quits; returns the exit code."""
        try:
            while True:
                if not self.queue and not self._fetch():
                    self._say(f"Nothing left to label in {self.session}. {self.labels} labels.")
                    return 0
                action = self._ask(self.queue[0])
                if action.kind == "quit":
                    break
                self._apply(action)
        except (KeyboardInterrupt, EOFError):
            pass
        released = self.client.release(self.session)
        self._say(f"Bye: {self.labels} labels; {released} unlabelled item(s) handed back.")
        return 0

    def _fetch(self) -> bool:
        batch = self.client.next_batch(self.session)
        self.queue = [Pending(x.id, x.text, x.suggestion) for x in batch]
        status = self.client.status(self.session, stopping=False)  # the next batch waits
        self.labels, self.accuracy = status.labels, status.estimated_accuracy
        self.accuracy_classes = status.accuracy_classes
        return bool(self.queue)

    def _apply(self, action: Action) -> None:
        item = self.queue[0]
        try:
            if action.kind == "label":
                self.labels = self.client.submit(
                    self.session, [(item.id, action.label)]
                ).total_labels
                self.queue.pop(0)
                self.message = f"#{item.id} → {action.label}"
            elif action.kind == "skip":
                self.client.skip(self.session, [item.id])
                self.queue.pop(0)
                self.message = f"#{item.id} skipped"
            elif action.kind == "undo":
                undone = self.client.undo(self.session)
                self.labels = undone.total_labels
                back = [Pending(x.id, x.text) for x in undone.items]
                ids = {p.id for p in back}
                self.queue = back + [p for p in self.queue if p.id not in ids]
                what = ", ".join(f"#{x.id} {x.label or 'skip'}" for x in undone.items)
                self.message = f"undone: {what}"
        except ProxalError as exc:
            status = rpc_status(exc)
            if status is None:
                raise
            if isinstance(exc, FailedPreconditionError) and action.kind != "undo":
                self.queue.pop(0)  # e.g. the lease expired and someone else has the item
            self.message = f"not saved: {status[1]}"

    def _ask(self, item: Pending) -> Action:
        while True:
            self._render(item)
            suggested = item.suggestion.label if item.suggestion else None
            action, self.message = choose(next(self.keys), self.classes, suggested)
            if action is not None:
                return action

    def _render(self, item: Pending) -> None:
        width = min(shutil.get_terminal_size((100, 30)).columns, 100)
        accuracy = (
            "n/a"
            if self.accuracy is None
            else f"{self.accuracy:.2f} on {self.accuracy_classes} of {len(self.classes)} classes"
        )
        lines = [
            "\x1b[2J\x1b[H" if self.out.isatty() else "",
            f"proxal label · {self.session} · {self.client.annotator} · labels {self.labels}"
            f" · est. accuracy {accuracy} · {len(self.queue)} left in batch",
            self.message,  # what the last key did
            "─" * width,
            f"#{item.id}",
            *(textwrap.wrap(item.text, width) or [""]),
            "─" * width,
            *_columns([f"{n} {c}" for n, c in enumerate(self.classes, 1)], width),
            *_suggested(item.suggestion),
            HELP + (" · press a number" if self.key_mode else " · number or name, Enter"),
        ]
        self._say("\n".join(lines))
        if not self.key_mode:
            self.out.write("label> ")
            self.out.flush()

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _suggested(suggestion: Suggestion | None) -> list[str]:
    """The line that shows the proxy's suggestion, or none."""
    if suggestion is None:
        return []
    return [f"suggested: {suggestion.label} ({suggestion.probability:.2f}) · Enter takes it"]


def _columns(cells: list[str], width: int) -> list[str]:
    cell = max(len(c) for c in cells) + 3
    per_row = max(1, width // cell)
    return [
        "".join(c.ljust(cell) for c in cells[i : i + per_row]).rstrip()
        for i in range(0, len(cells), per_row)
    ]


@contextlib.contextmanager
def cbreak(stream: TextIO) -> Iterator[None]:
    """Keys arrive one at a time, without Enter, while inside (a no-op if not a terminal)."""
    if not stream.isatty():
        yield
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_keys(stream: TextIO, single: bool) -> Iterator[str]:
    """Single keys from a terminal in cbreak mode if `single`, else lines."""
    if single and stream.isatty():
        while True:
            key = os.read(stream.fileno(), 8).decode(errors="ignore")
            if not key or key == "\x04":  # end of input, Ctrl-D
                raise EOFError
            yield key[:1]
    for line in stream:
        yield line.rstrip("\n")
    raise EOFError


def run(client: Client, session: str, stdin: TextIO = sys.stdin) -> int:
    """`proxal label`: single keys with at most 9 classes, else a line per answer."""
    app = LabelApp(client, session, sys.stdout, iter(()))
    with cbreak(stdin) if app.key_mode else contextlib.nullcontext():
        app.keys = read_keys(stdin, app.key_mode)
        return app.run()
