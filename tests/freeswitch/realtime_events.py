#!/usr/bin/env python3
"""Validates OpenAI Realtime events against the openai package's own types.

    python3 realtime_events.py [CLIENT_EVENTS.json] [--server SERVER_EVENTS.json]

Each file holds a JSON list of events. Each event is validated with pydantic
against openai.types.realtime.RealtimeClientEvent (RealtimeServerEvent for
the --server file), strictly (no coercion of "100" to 100), and then refused if
it holds any key the types do not define: the openai models allow extra keys
and would otherwise keep them silently.

One exception, for session.created and session.updated: the package types
their `session` as RealtimeSessionCreateRequest, while OpenAI's published
reference (and the live API) sends the session object,
RealtimeSessionCreateResponse, which adds `id`, `object` and `expires_at`.
A key under `session` is accepted when RealtimeSessionCreateResponse defines
it and the session validates as one.

Exit codes: 0 all valid, 1 some event invalid (each one printed), 2 a usage
error, 3 the openai package or its GA Realtime types are missing.
"""

import argparse
import json
import sys
import typing

try:
    import openai
    import pydantic
    from openai.types.realtime import (
        RealtimeClientEvent,
        RealtimeServerEvent,
        RealtimeSessionCreateResponse,
    )
except ImportError as error:
    print(f"cannot import the openai package's Realtime types ({error}): pip install --upgrade openai", file=sys.stderr)
    sys.exit(3)  # an openai older than the GA Realtime types lands here too

SESSION_EVENTS = ("session.created", "session.updated")
RESPONSE_ONLY_SESSION_KEYS = set(RealtimeSessionCreateResponse.model_fields) - {"type"}


def extras(value, path):
    """Yields the path of every key that no model in `value` defines."""
    if isinstance(value, pydantic.BaseModel):
        for key in (value.__pydantic_extra__ or {}):
            yield f"{path}.{key}"
        for name in type(value).model_fields:
            yield from extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from extras(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from extras(item, f"{path}.{key}")


def by_type(union):
    """The event models of an Annotated union, by the literal of their `type`."""
    models = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(model.model_fields["type"].annotation)[0]: model for model in models}


def problems(models, event):
    """What is wrong with one event, as a list of sentences (empty: valid)."""
    model_class = models.get(event.get("type")) if isinstance(event, dict) else None
    if model_class is None:
        return ["not an event of a type the openai types define"]
    try:
        model = model_class.model_validate(event, strict=True)
    except pydantic.ValidationError as error:
        return ["\n    ".join(line for line in str(error).splitlines() if "errors.pydantic.dev" not in line)]
    unknown = list(extras(model, "event"))
    if event.get("type") in SESSION_EVENTS and isinstance(event.get("session"), dict):
        # The session object as the reference publishes it (see the docstring).
        try:
            RealtimeSessionCreateResponse.model_validate(event["session"], strict=True)
        except pydantic.ValidationError as error:
            return [f"session as RealtimeSessionCreateResponse: {error}"]
        allowed = {f"event.session.{key}" for key in RESPONSE_ONLY_SESSION_KEYS}
        unknown = [path for path in unknown if path not in allowed]
    return [f"{path}: a key the openai types do not define" for path in unknown]


def check(path, union, kind):
    """Prints each problem of the events in `path`; returns how many there were."""
    with open(path, encoding="utf-8") as file:
        events = json.load(file)
    models = by_type(union)
    failed = 0
    for index, event in enumerate(events):
        for problem in problems(models, event):
            failed += 1
            print(f"{kind} event {index} ({event.get('type') if isinstance(event, dict) else event!r}): {problem}")
    print(f"{len(events)} {kind} events checked with openai {openai.__version__}: {failed} problems")
    return failed


def main():
    parser = argparse.ArgumentParser(description="Validates OpenAI Realtime events with the openai types.")
    parser.add_argument("client", nargs="?", help="a JSON list of client events")
    parser.add_argument("--server", help="a JSON list of server events")
    arguments = parser.parse_args()
    if not arguments.client and not arguments.server:
        parser.error("no events to check")
    failed = 0
    if arguments.client:
        failed += check(arguments.client, RealtimeClientEvent, "client")
    if arguments.server:
        failed += check(arguments.server, RealtimeServerEvent, "server")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
