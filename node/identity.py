"""The node's identity: an Ed25519 key (file mode 0600, never leaves the host) and a node id."""

from pathlib import Path

import msgspec

from adapters.keyfile import load_or_create_signer, load_signer
from domain.ids import uuid7
from domain.signing import Signer
from node.state import Database


class NodeIdentity(msgspec.Struct, frozen=True):
    node_id: str
    signer: Signer

    @property
    def public_key_hex(self) -> str:
        return self.signer.public_key.hex()


def create_identity(db: Database, key_path: Path) -> NodeIdentity:
    signer = load_or_create_signer(key_path)
    node_id = db.get_meta("node_id")
    if node_id is None:
        node_id = uuid7()
        db.set_meta("node_id", node_id)
    db.set_meta("public_key", signer.public_key.hex())
    return NodeIdentity(node_id, signer)


def load_identity(db: Database, key_path: Path) -> NodeIdentity:
    node_id = db.get_meta("node_id")
    if node_id is None or not key_path.exists():
        raise SystemExit("this node is not initialised: run `b3iq-host init` first")
    return NodeIdentity(node_id, load_signer(key_path))
