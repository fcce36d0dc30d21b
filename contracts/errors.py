"""Why a message cannot be accepted. Every one is permanent: the message is dead-lettered with
``str(error)`` as the reason, so each ``str()`` is a single line that names what was wrong."""

from __future__ import annotations


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ContractError(Exception):
    """A message that breaks the contract between services."""


class InvalidEnvelope(ContractError):
    """The AMQP properties or headers lack what every message must carry."""

    def __init__(self, reason: str, type: str | None = None) -> None:
        self.reason = _one_line(reason)
        self.type = type
        where = f" of {type}" if type else ""
        super().__init__(f"invalid envelope{where}: {self.reason}")


class MessageError(ContractError):
    """A problem with one (type, version) of message."""

    def __init__(self, type: str, version: int | None, reason: str) -> None:
        self.type = type
        self.version = version
        self.reason = _one_line(reason)
        name = type if version is None else f"{type} v{version}"
        super().__init__(f"{name}: {self.reason}")


class UnknownMessageType(MessageError):
    pass


class UnknownContractVersion(MessageError):
    pass


class InvalidBody(MessageError):
    pass
