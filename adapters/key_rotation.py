"""Key rotation over a signed node request: both keys checked, NodeKeyRotated recorded."""

from collections.abc import Mapping

import msgspec

from adapters.enrollment import refused
from adapters.http.problems import ApiError
from adapters.node_auth import NodeAuthenticator, NodeDirectory
from adapters.recorder import Recorder
from domain.decoding import Decoded
from domain.events import Event, NodeEvidence
from domain.key_rotation import KeyRotationRequest, check_new_key
from domain.node_requests import Rejection
from domain.nodes import Refused, decide_rotation, state_of
from domain.signing import key_id_for


class KeyRotated(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    old_key_id: str
    key_id: str
    seq: int
    """The ledger sequence the rotation landed at (for read-your-writes)."""


_decoder = msgspec.json.Decoder(KeyRotationRequest)


class KeyRotation:
    def __init__(
        self, auth: NodeAuthenticator, recorder: Recorder, directory: NodeDirectory
    ) -> None:
        self._auth = auth
        self._recorder = recorder
        self._directory = directory

    async def rotate(
        self, node_id: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> KeyRotated:
        """Refusals append nothing: 401 (``unauthorized``, ``invalid_signature``: the
        request, or the new key's proof) or 400 ``invalid_request``."""
        request = await self._auth.authenticate(node_id, "POST", path, headers, body)
        old_key_id = request.signed.key_id
        try:
            text = body.decode()
            wanted = _decoder.decode(text)
        except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError(400, "invalid_request", "Bad Request", str(exc)) from None
        new_key = check_new_key(wanted, node_id, old_key_id)
        if isinstance(new_key, Rejection):
            raise refused(Refused(new_key.code, new_key.reason))
        evidence = NodeEvidence(
            key_id=old_key_id,
            body=request.canonical.decode(),
            sig=request.signed.signature,
            request_body=text,
        )

        def decide(tail: Decoded | None) -> list[Event]:
            # Decided on the ledger's state, not the cached one: of two concurrent
            # rotations signed by the same key, the second finds that key retired.
            state = state_of(tail.event) if tail else None
            return decide_rotation(state, old_key_id, new_key, wanted.public_key, evidence)

        try:
            result = await self._recorder.record(
                self._recorder.topology.subject("node", node_id), decide
            )
        except Refused as exc:
            raise refused(exc) from None
        finally:
            self._directory.forget(node_id)
        assert result is not None  # decide_rotation always appends or refuses
        return KeyRotated(
            node_id=node_id,
            old_key_id=old_key_id,
            key_id=key_id_for(new_key),
            seq=result.last_seq,
        )
