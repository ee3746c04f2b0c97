"""What travels between node and control plane about commands (pure wire types)."""

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from domain.command_specs import CommandSpec


class LeasedCommand(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    lease_id: str
    lease_expires_at: datetime
    attempt: int
    spec: CommandSpec


class Polled(msgspec.Struct, frozen=True, kw_only=True):
    commands: list[LeasedCommand]


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a node uploads (signed) when it is done with a command."""

    command_id: str
    lease_id: str
    outcome: Annotated[str, Meta(pattern="^(succeeded|failed|refused)$")]
    code: Annotated[str, Meta(max_length=64)] = ""
    """Why it failed or was refused (a stable code); empty on success."""
    output: dict[str, Any] = {}
