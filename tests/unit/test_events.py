"""The event stream: its schema is the README's (every type and field documented there), a slow
or failing subscriber never holds a deployment up, and the journal hears every event in order."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from deployer.agent import AGENT_EVENT_TYPES
from deployer.engine.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    EventStream,
    JsonLinesWriter,
    Note,
    Published,
    Subscriber,
)
from deployer.engine.model import DeploymentRef

README = Path(__file__).resolve().parents[2] / "README.md"
# Fields every line has, besides those of its type.
ENVELOPE = {"schema", "seq", "at", "type", "deployment"}


def documented(after: str = "The types and their fields") -> dict[str, set[str]]:
    """The README's table of event types that follows ``after``: type -> its fields."""
    text = README.read_text(encoding="utf-8")
    table = text.split(after, 1)[1].split("\n\n", 2)[1]
    types: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        types[name] = _fields(cells[1])
    return types


def _fields(cell: str) -> set[str]:
    """The field names of a cell such as "`index`, `nodes`, `decision` (`continue`, `stop`)":
    each comma-separated item outside parentheses that starts with a name in backquotes."""
    items, depth, start = [], 0, 0
    for i, c in enumerate(cell):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "," and depth == 0:
            items.append(cell[start:i])
            start = i + 1
    items.append(cell[start:])
    return {m.group(1) for item in items if (m := re.match(r"\s*`([a-z0-9_]+)`", item))}


def test_every_event_type_and_field_is_documented_in_the_readme() -> None:
    docs = documented()
    assert set(docs) == set(EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert docs[name] == fields, name


def test_every_runner_event_type_and_field_is_documented_in_the_readme() -> None:
    docs = documented("The runner's event types and their fields")
    assert set(docs) == set(AGENT_EVENT_TYPES)
    for name, cls in AGENT_EVENT_TYPES.items():
        assert docs[name] == {f.name for f in dataclasses.fields(cls)}, name
    # One wire, one registry of names: a runner's event is never taken for a deployment's.
    assert not set(AGENT_EVENT_TYPES) & set(EVENT_TYPES)


def _published(stream: EventStream, text: str) -> Published:
    return stream.publish(Note(text=text))


class Slow(Subscriber):
    """A detached subscriber stuck until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.heard: list[int] = []

    def on_event(self, published: Published) -> None:
        self.release.wait(timeout=30)
        self.heard.append(published.seq)


class Failing(Subscriber):
    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, published: Published) -> None:
        self.calls += 1
        raise RuntimeError("the webhook is down")


class Inline(Subscriber):
    synchronous: ClassVar[bool] = True

    def __init__(self) -> None:
        self.heard: list[int] = []

    def on_event(self, published: Published) -> None:
        self.heard.append(published.seq)


def test_a_slow_or_failing_subscriber_never_holds_a_deployment_up() -> None:
    slow, failing, inline = Slow(), Failing(), Inline()
    stream = EventStream([slow, failing, inline])
    for i in range(50):  # all published while the slow subscriber has not finished one
        _published(stream, f"line {i}")
    assert inline.heard == list(range(1, 51))  # the inline one (the journal) heard each, in order
    assert slow.heard == []
    slow.release.set()
    stream.close(timeout=10)
    assert slow.heard == list(range(1, 51))  # and the slow one all of them, in order, in the end
    assert failing.calls == 1  # left out after its first failure, which is reported
    assert stream.errors == ["Failing: the webhook is down"]


def test_each_line_is_one_json_object_with_the_envelope() -> None:
    out = io.StringIO()
    stream = EventStream([JsonLinesWriter(out)], clock=lambda: 1_765_101_601.25)
    stream.deployment = DeploymentRef(id=3, uid="01JEXS7V8T6Q3M0W2ZB1K9D4RC", env="prod", kind="deploy",
                                      version="1.4.2")
    _published(stream, "hello")
    stream.close()
    [line] = out.getvalue().splitlines()
    data: dict[str, Any] = json.loads(line)
    assert data == {
        "schema": SCHEMA_VERSION, "seq": 1, "at": "2025-12-07T10:00:01.250Z", "type": "message",
        "deployment": {"id": 3, "uid": "01JEXS7V8T6Q3M0W2ZB1K9D4RC", "env": "prod", "kind": "deploy",
                       "version": "1.4.2"},
        "text": "hello", "level": "info",
    }


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_no_event_type_uses_an_envelope_name_for_a_field(name: str) -> None:
    assert not {f.name for f in dataclasses.fields(EVENT_TYPES[name])} & ENVELOPE
