"""Champion moves: promote, roll back, and put back a move that a later step undid.

`champion` moves only on promotion (a gate pass in the retrain flow, or an explicit
`visiongate promote`); the version it leaves keeps `previous-champion`, so a rollback is one
command. A rollback makes the previous champion champion again; the rolled-back version
loses every alias but `challenger` (a second rollback would otherwise re-promote it) and
`previous-champion` is cleared until the next promotion. Each move is tagged on the versions
it touches (when, by whom, why) and appended to the registered model's `champion_history`
tag. A move that fails half-way puts the aliases back before its error propagates; `restore`
puts back a completed move (the retrain flow's transaction rollback, tasks/registry.py).

Serialised per store by registry.alias_lock (sqlite); through a tracking server, callers
hold a lock every writer shares (tasks/registry.py: a Prefect global concurrency limit).
MLflow itself is reached through registry.py (client_for, set_aliases), the registry edge.
"""

from __future__ import annotations

import getpass
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from visiongate.errors import RegistryError
from visiongate.registry import (CHAMPION, PREVIOUS, alias_lock, by_alias, client_for, get,
                                 set_aliases, tag_version)

HISTORY_TAG, HISTORY_KEEP = "champion_history", 50


@dataclass(frozen=True)
class Move:
    """One move of `champion`: `version` became champion, replacing `replaced` (or None)."""

    action: str  # "promote" | "rollback" | "undo" (a move put back: restore)
    name: str
    version: str
    replaced: str | None
    at: str
    by: str
    reason: str
    # `champion` and `previous-champion` as the move found them (not in the history)
    before: dict = field(default_factory=dict, compare=False)


def _record(client, move: Move) -> Move:
    """Tag the new champion and append the move to the model's history."""
    tag_version(client, move.name, move.version, {
        "promoted_at": move.at, "promoted_by": move.by, "promotion_reason": move.reason,
        "promoted_from": move.replaced or "none", "promotion_action": move.action})
    return _append_history(client, move)


def _append_history(client, move: Move) -> Move:
    history = json.loads(client.get_registered_model(move.name).tags.get(HISTORY_TAG, "[]"))
    entry = {**asdict(move), "reason": move.reason[:500]}
    entry.pop("before")
    client.set_registered_model_tag(move.name, HISTORY_TAG,
                                    json.dumps((history + [entry])[-HISTORY_KEEP:]))
    return move


def aliases(uri: str, name: str) -> dict[str, str | None]:
    """The versions holding `champion` and `previous-champion` (None where none does): the
    state an alias move starts from, and what `restore` puts back."""
    return {alias: (found.version if (found := by_alias(uri, name, alias)) else None)
            for alias in (CHAMPION, PREVIOUS)}


@contextmanager
def _undone_on_error(client, name: str, before: dict[str, str | None]):
    """A move that fails half-way (the server blinked between two alias writes) puts the
    aliases back as they were, so a retry starts from a clean state, never from a champion
    that moved without its history entry."""
    try:
        yield
    except BaseException:
        try:
            set_aliases(client, name, before)
        except Exception:  # the store is the failure: the original error says more
            pass
        raise


def promote(uri: str, name: str, version: str, reason: str, by: str | None = None) -> Move:
    """Move `champion` to `version`; the replaced champion becomes `previous-champion`.

    Promoting the current champion again changes nothing (the returned move has
    `replaced == version`).
    """
    client, by = client_for(uri), by or f"user {getpass.getuser()}"
    with alias_lock(uri):
        get(uri, name, version)  # clear error for an unknown name or version
        before = aliases(uri, name)
        current = before[CHAMPION]
        if current == version:
            return Move("promote", name, version, version, _now(), by, reason, before)
        move = Move("promote", name, version, current, _now(), by, reason, before)
        with _undone_on_error(client, name, before):
            if current is not None:
                client.set_registered_model_alias(name, PREVIOUS, current)
                tag_version(client, name, current, {
                    "retired_at": move.at, "retired_by": by,
                    "retired_reason": f"replaced by v{version}: {reason}"})
            client.set_registered_model_alias(name, CHAMPION, version)
            return _record(client, move)


def rollback(uri: str, name: str, reason: str, by: str | None = None) -> Move:
    """Make `previous-champion` champion again; the rolled-back version loses `champion`."""
    client, by = client_for(uri), by or f"user {getpass.getuser()}"
    with alias_lock(uri):
        before = aliases(uri, name)
        if before[PREVIOUS] is None:
            raise RegistryError(f"{name}: no version has alias {PREVIOUS!r}; nothing to roll back "
                                "to (use `visiongate promote NAME VERSION` to pick one)")
        current = before[CHAMPION]
        move = Move("rollback", name, before[PREVIOUS], current, _now(), by, reason, before)
        with _undone_on_error(client, name, before):
            set_aliases(client, name, {CHAMPION: before[PREVIOUS], PREVIOUS: None})
            if current is not None:
                tag_version(client, name, current, {
                    "rolled_back_at": move.at, "rolled_back_by": by, "rolled_back_reason": reason})
            return _record(client, move)


def restore(uri: str, name: str, before: dict[str, str | None], undone: str, reason: str,
            by: str | None = None) -> Move | None:
    """Put `champion` and `previous-champion` back to `before` (a move's `before`), when
    `champion` is still the `undone` version that move made champion, and record an "undo"
    in the history. None when the aliases already are `before`; RegistryError when another
    move came since (it is kept: undoing ours would undo it too)."""
    client, by = client_for(uri), by or f"user {getpass.getuser()}"
    with alias_lock(uri):
        now = aliases(uri, name)
        if now == before:
            return None
        if now[CHAMPION] != undone:
            raise RegistryError(f"{name}: not undoing the promotion of v{undone}: champion is "
                                f"now v{now[CHAMPION]}, moved by someone else since")
        set_aliases(client, name, before)
        return _append_history(client, Move("undo", name, before[CHAMPION] or "none", undone,
                                            _now(), by, reason, now))


def history(uri: str, name: str) -> list[dict]:
    """Champion moves of `name`, oldest first (the last HISTORY_KEEP)."""
    return json.loads(client_for(uri).get_registered_model(name).tags.get(HISTORY_TAG, "[]"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
