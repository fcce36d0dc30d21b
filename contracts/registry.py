"""Which model reads which (type, version), and how old versions become the newest one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from pydantic import ValidationError

from contracts.base import Message, MessageKind
from contracts.errors import InvalidBody, UnknownContractVersion, UnknownMessageType

Payload: TypeAlias = dict[str, Any]
Upcaster: TypeAlias = Callable[[Payload], Payload]
MessageClass: TypeAlias = type[Message]
M = TypeVar("M", bound=MessageClass)

_MAX_PROBLEMS = 5  # a dead-letter reason is one readable line, not the whole pydantic report


def summarize(error: ValidationError) -> str:
    """`items.0.quantity: Input should be ...; total: Field required` on one line."""
    problems = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors(include_url=False)
    ]
    more = len(problems) - _MAX_PROBLEMS
    return "; ".join(problems[:_MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")


class Registry:
    def __init__(self) -> None:
        self._models: dict[str, dict[int, MessageClass]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, model: M) -> M:
        """Class decorator: make `model` the reader of (model.TYPE, model.VERSION)."""
        type, version = model.TYPE, model.VERSION
        versions = self._models.setdefault(type, {})
        if version in versions:
            raise ValueError(f"{type} v{version} is already registered as {versions[version]}")
        if any(other.KIND != model.KIND for other in versions.values()):
            raise ValueError(f"{type} v{version} is a {model.KIND}, its other versions are not")
        versions[version] = model
        return model

    def upcaster(self, type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register the function turning a `from_version` payload into the next one."""
        self.model_for(type, from_version)
        self.model_for(type, from_version + 1)

        def register(upcast: Upcaster) -> Upcaster:
            if (type, from_version) in self._upcasters:
                raise ValueError(f"{type} v{from_version} already has an upcaster")
            self._upcasters[type, from_version] = upcast
            return upcast

        return register

    def types(self) -> list[str]:
        return sorted(self._models)

    def latest_version(self, type: str) -> int:
        return max(self._versions(type, version=None))

    def model_for(self, type: str, version: int) -> MessageClass:
        versions = self._versions(type, version)
        if version not in versions:
            known = ", ".join(f"v{v}" for v in sorted(versions))
            reason = f"unknown contract version (known: {known})"
            raise UnknownContractVersion(type, version, reason)
        return versions[version]

    def kind(self, type: str) -> MessageKind:
        return self.model_for(type, self.latest_version(type)).KIND

    def released(self) -> list[tuple[str, int, MessageClass]]:
        return [
            (type, version, model)
            for type, versions in sorted(self._models.items())
            for version, model in sorted(versions.items())
        ]

    def missing_upcasters(self) -> list[tuple[str, int]]:
        """(type, from_version) pairs with no way up to the newest version; should be empty."""
        return [
            (type, version)
            for type, version, _ in self.released()
            if version < self.latest_version(type) and (type, version) not in self._upcasters
        ]

    def decode(self, type: str, version: int, body: bytes | str) -> Message:
        """Read a body sent as (type, version) and return it as the newest version's model."""
        try:
            message = self.model_for(type, version).model_validate_json(body)
        except ValidationError as error:
            raise InvalidBody(type, version, f"invalid body: {summarize(error)}") from error
        latest = self.latest_version(type)
        if version == latest:
            return message
        payload = message.model_dump(mode="json")
        for step in range(version, latest):
            upcast = self._upcasters.get((type, step))
            if upcast is None:
                reason = f"no upcaster from v{step} to v{step + 1}"
                raise UnknownContractVersion(type, version, reason)
            try:
                payload = upcast(payload)
            except Exception as error:
                reason = f"upcasting v{step} to v{step + 1} failed: {error!r}"
                raise InvalidBody(type, version, reason) from error
        try:
            # Through JSON, so the newest model reads exactly what a v{latest} producer would send.
            return self.model_for(type, latest).model_validate_json(json.dumps(payload))
        except (TypeError, ValueError) as error:  # ValidationError is a ValueError
            problem = summarize(error) if isinstance(error, ValidationError) else repr(error)
            raise InvalidBody(type, version, f"invalid after upcasting: {problem}") from error

    def encode(self, message: Message) -> bytes:
        """The body of `message`: compact JSON."""
        if self.model_for(message.TYPE, message.VERSION) is not message.__class__:
            reason = f"{message.__class__.__name__} is not the registered model"
            raise UnknownMessageType(message.TYPE, message.VERSION, reason)
        return message.model_dump_json().encode()

    def _versions(self, type: str, version: int | None) -> dict[int, MessageClass]:
        if type not in self._models:
            raise UnknownMessageType(type, version, "unknown message type")
        return self._models[type]


registry = Registry()
decode_message = registry.decode
encode_message = registry.encode
