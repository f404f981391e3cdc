"""Release windows and calendar freezes as instants: across midnight, across daylight-saving
changes, and the next opening; the config refuses YAML's unquoted times and dates."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from deployer import ConfigError, load_config
from deployer.config import GatesConfig
from deployer.gates.calendar import Calendar, local_instant

LONDON = ZoneInfo("Europe/London")
UTC = ZoneInfo("UTC")


def at(text: str, tz: ZoneInfo = LONDON) -> float:
    """The instant the wall clock in ``tz`` shows ``text`` (``YYYY-MM-DD HH:MM``), the first
    time it shows it."""
    when = dt.datetime.fromisoformat(text)
    return local_instant(when.date(), when.hour * 60 + when.minute, tz)


def utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def calendar(**gates: Any) -> Calendar:
    return Calendar.of(GatesConfig.model_validate(gates))


def test_a_weekday_window_in_its_time_zone() -> None:
    cal = calendar(windows=[{"days": ["tue", "wed", "thu"], "from": "09:00", "to": "16:00",
                             "tz": "Europe/London"}])
    # Tuesday 8 December 2026 (GMT): open 09:00-16:00 London, i.e. UTC.
    assert cal.window_at(at("2026-12-08 08:59")) is None
    opened = cal.window_at(at("2026-12-08 09:00"))
    assert opened is not None and utc(opened.closes) == "2026-12-08 16:00"
    assert cal.window_at(at("2026-12-08 16:00")) is None  # closed at its end
    assert cal.window_at(at("2026-12-11 10:00")) is None  # a Friday
    # From Thursday evening the next opening is Tuesday morning.
    assert cal.next_opening(at("2026-12-10 17:00")) == at("2026-12-15 09:00")
    # In summer (BST) the same window is 08:00-15:00 UTC.
    summer = cal.window_at(at("2026-07-07 09:30"))
    assert summer is not None and utc(summer.opens) == "2026-07-07 08:00"


def test_a_window_crossing_midnight_belongs_to_the_day_it_opens() -> None:
    cal = calendar(windows=[{"days": ["fri"], "from": "22:00", "to": "02:00"}])  # UTC
    friday_night = cal.window_at(at("2026-12-12 01:30", UTC))  # Saturday 01:30
    assert friday_night is not None
    assert (utc(friday_night.opens), utc(friday_night.closes)) == (
        "2026-12-11 22:00", "2026-12-12 02:00")
    assert cal.window_at(at("2026-12-12 02:00", UTC)) is None
    assert cal.window_at(at("2026-12-12 22:30", UTC)) is None  # Saturday night: no
    assert cal.next_opening(at("2026-12-12 03:00", UTC)) == at("2026-12-18 22:00", UTC)


def test_a_window_on_the_night_the_clocks_go_forward() -> None:
    """London, Sunday 29 March 2026: at 01:00 GMT the clocks jump to 02:00 BST."""
    cal = calendar(windows=[{"days": ["sun"], "from": "01:30", "to": "03:00", "tz": "Europe/London"}])
    night = cal.window_at(at("2026-03-29 02:30"))
    assert night is not None
    # 01:30 never shows on the wall: the window opens at the jump (01:00 UTC) and closes at
    # 03:00 BST (02:00 UTC) — one hour long, as the wall clock says.
    assert (utc(night.opens), utc(night.closes)) == ("2026-03-29 01:00", "2026-03-29 02:00")
    assert cal.window_at(at("2026-03-29 00:59")) is None
    assert cal.next_opening(at("2026-03-28 12:00")) == night.opens


def test_a_window_on_the_night_the_clocks_go_back() -> None:
    """London, Sunday 25 October 2026: at 02:00 BST the clocks go back to 01:00 GMT, so 01:00 to
    02:00 happens twice; a window from 01:00 to 03:00 lasts three hours."""
    cal = calendar(windows=[{"days": ["sun"], "from": "01:00", "to": "03:00", "tz": "Europe/London"}])
    night = cal.window_at(at("2026-10-25 01:30"))
    assert night is not None
    assert (utc(night.opens), utc(night.closes)) == ("2026-10-25 00:00", "2026-10-25 03:00")
    # The second 01:30 (GMT, 01:30 UTC) is inside it too.
    assert cal.window_at(dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC).timestamp()) is not None


def test_a_calendar_freeze_closes_windows_and_moves_the_next_opening() -> None:
    cal = calendar(timezone="Europe/London",
                   windows=[{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "16:00"}],
                   freezes=[{"from": "2026-12-21", "to": "2027-01-04", "reason": "year end"}])
    assert cal.window_at(at("2026-12-22 10:00")) is not None
    assert not cal.allowed(at("2026-12-22 10:00"))
    freeze = cal.freeze_at(at("2027-01-04 23:59"))  # the last day is frozen whole
    assert freeze is not None and freeze.reason == "year end"
    assert cal.next_opening(at("2026-12-22 10:00")) == at("2027-01-05 09:00")
    # A freeze ending inside a window: the opening is the freeze's end.
    cal = calendar(windows=[{"from": "09:00", "to": "17:00"}],
                   freezes=[{"from": "2026-12-22T00:00", "to": "2026-12-22T12:30", "reason": "x"}])
    assert utc(cal.next_opening(at("2026-12-22 10:00", UTC)) or 0) == "2026-12-22 12:30"


def test_without_windows_only_freezes_close_the_calendar() -> None:
    cal = calendar(freezes=[{"from": "2026-12-20", "to": "2026-12-21", "reason": "x"}])
    assert cal.allowed(at("2026-12-19 23:59", UTC))
    assert not cal.allowed(at("2026-12-21 12:00", UTC))
    assert cal.next_opening(at("2026-12-21 12:00", UTC)) == at("2026-12-22 00:00", UTC)


def write_config(tmp_path: Path, gates: str) -> Path:
    (tmp_path / "inv.yml").write_text("all: {hosts: {n1: {}, n2: {}}}\n")
    (tmp_path / "k.pub").write_text("untrusted comment: a key file (not read here)\n")
    path = tmp_path / "deployer.yml"
    path.write_text(textwrap.dedent("""
        environments:
          prod:
            inventory: inv.yml
            app: {name: hello}
            store: {url: "file:///nonexistent"}
            trusted_keys: [k.pub]
            load_balancer: {socket: /x.sock, backend: hello}
            gates:
        """) + textwrap.indent(textwrap.dedent(gates), "      "))
    return path


@pytest.mark.parametrize(("gates", "says"), [
    ('windows: [{days: [tue], from: 9:00, to: "16:00"}]',
     r"gates\.windows\.0\.from': YAML reads an unquoted 9:00 as the number 540: quote the time, "
     r'e\.g\. "09:00"'),
    ('windows: [{days: [tue], from: "09:00", to: 16:00}]', r'number 960: quote the time, e\.g\. "16:00"'),
    ("freezes: [{from: 2026-12-20, to: \"2027-01-04\", reason: x}]",
     r"gates\.freezes\.0\.from': YAML reads an unquoted 2026-12-20 as a date: quote it, "
     r'e\.g\. "2026-12-20"'),
    ('windows: [{days: [tue], from: "09:00", to: "16:00", tz: Europe/Lodnon}]',
     r"unknown time zone 'Europe/Lodnon'"),
    ('windows: [{days: [tues], from: "09:00", to: "16:00"}]', r"'tues' is not a day"),
    ('windows: [{from: "9am", to: "16:00"}]', r'must be a time of day "HH:MM"'),
    ("freezes: [{from: \"2027-01-04\", to: \"2026-12-20\", reason: x}]", r"is before from"),
    ("on_window_close: later", r"gates\.on_window_close"),
    ("{on: pause}", r"YAML reads the key 'on' as true"),
])
def test_the_config_check_names_the_field_and_says_what_to_write(
    tmp_path: Path, gates: str, says: str,
) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(write_config(tmp_path, gates))


def test_a_window_closing_with_rollback_needs_on_failure_rollback(tmp_path: Path) -> None:
    path = write_config(tmp_path, "on_window_close: rollback\n")
    data = yaml.safe_load(path.read_text())
    data["environments"]["prod"]["strategy"] = {"on_failure": "halt"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError,
                       match=r"on_window_close: rollback .* needs strategy\.on_failure: rollback"):
        load_config(path)
