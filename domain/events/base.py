"""What every event payload is: a frozen, tagged Struct with a schema version."""

from typing import ClassVar

import msgspec


class Event(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Base of all payloads. The tag (the class name) is the envelope's ``type``.

    Evolving a schema: add fields with defaults and bump SCHEMA_VERSION; never change a
    field's type or meaning, so every event ever written still decodes.
    """

    SCHEMA_VERSION: ClassVar[int] = 1


class NodeEvidence(msgspec.Struct, frozen=True):
    """Something a node signed, kept verbatim: its exact JSON text and its signature."""

    key_id: str
    body: str
    sig: str
    request_body: str | None = None
    """For a signed request, ``body`` is its canonical text (which names the SHA-256 of
    the request body) and this is the request body itself, kept verbatim."""
