from collections.abc import Sequence

from domain.decoding import Decoded
from domain.events import SignerKeyPublished
from projections.db import Database


class SignerKeysProjection:
    name = "signer_keys"
    stream = "ledger"
    handles = (SignerKeyPublished,)
    tables = ("signer_keys",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        rows = [
            (p.event.key_id, p.event.public_key, p.event.purpose, p.body.occurred_at, p.seq)
            for p in batch
            if isinstance(p.event, SignerKeyPublished)
        ]
        if rows:
            await db.executemany(
                "INSERT INTO signer_keys (key_id, public_key, purpose, published_at, seq)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id) DO NOTHING",
                rows,
            )
