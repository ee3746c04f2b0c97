"""The composition root of the node: state, identity, stores and runtimes, wired once."""

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from node.catalog import GGUF_KIND, ModelProfile, ModelSource, ModelStore, discover, profile_for
from node.identity import NodeIdentity, load_identity
from node.inventory import Inventory, read_inventory
from node.keys import KeyStore
from node.metrics import NodeMetrics
from node.owner import OwnerStore
from node.receipts import ReceiptStore
from node.runtime.base import Runtime
from node.runtime.llama import LlamaRuntime
from node.runtime.proxy import ProxyRuntime
from node.settings import NodeSettings
from node.state import Database

PROFILE_POLICY = "profile_policy."
"""Meta key prefix of a model's profile policy (route tier, eligibility flags)."""


@dataclass
class NodeServices:
    settings: NodeSettings
    db: Database
    identity: NodeIdentity
    keys: KeyStore
    owner: OwnerStore
    receipts: ReceiptStore
    models: ModelStore
    metrics: NodeMetrics
    sources: list[ModelSource] = field(default_factory=list)
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    inventory: Inventory | None = None
    started_at: float = field(default_factory=time.time)
    enrolled: bool = False
    """Managed Mode enrollment; until it exists receipts stay local."""
    receipts_queued: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when receipts are queued by hand: Managed Mode's sender wakes to send them."""

    def runtime_for(self, source: ModelSource) -> Runtime:
        s = self.settings
        if source.runtime_kind == GGUF_KIND:
            return LlamaRuntime(
                source.name,
                Path(source.source),
                n_ctx=s.n_ctx,
                n_threads=s.n_threads,
                max_queue=s.max_queue,
            )
        return ProxyRuntime(
            source.name,
            source.runtime_kind,
            source.source,
            upstream_model=source.upstream_model,
            max_queue=s.max_queue,
        )

    async def start(self, extra_models: list[Path]) -> None:
        self.inventory = await asyncio.to_thread(read_inventory, self.settings.state_dir)
        self.sources = discover(self.settings.models_dir, extra_models, self.models.list())
        for source in self.sources:
            runtime = self.runtime_for(source)
            await runtime.start()
            self.runtimes[source.name] = runtime

    async def close(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.close()
        self.runtimes.clear()
        self.db.close()

    def profiles(self) -> list[ModelProfile]:
        ram = self.inventory.ram_available_mib if self.inventory else None
        result = []
        for source in self.sources:
            runtime = self.runtimes.get(source.name)
            context = runtime.context_length if isinstance(runtime, LlamaRuntime) else None
            profile = profile_for(
                self.identity.node_id,
                source,
                runtime,
                ram_available_mib=ram,
                context_length=context,
            )
            result.append(self._with_policy(profile))
        return result

    def offered_to_network(self, model: str) -> bool:
        """The owner's consent for this model (cheap: asked on every routed request)."""
        if model not in self.runtimes:
            return False
        stored = self.db.get_meta(PROFILE_POLICY + model)
        return stored is not None and bool(msgspec.json.decode(stored).get("network_eligible"))

    def _with_policy(self, profile: ModelProfile) -> ModelProfile:
        """The operator's profile policy (set_profile_policy), if one was set for the model."""
        stored = self.db.get_meta(PROFILE_POLICY + profile.model)
        if stored is None:
            return profile
        policy = {k: v for k, v in msgspec.json.decode(stored).items() if v is not None}
        return msgspec.structs.replace(profile, **policy)


def open_services(settings: NodeSettings) -> NodeServices:
    db = Database(settings.db_path)
    return NodeServices(
        settings=settings,
        db=db,
        identity=load_identity(db, settings.key_path),
        keys=KeyStore(db),
        owner=OwnerStore(db, settings.session_ttl_s),
        receipts=ReceiptStore(db),
        models=ModelStore(db),
        metrics=NodeMetrics(),
    )
