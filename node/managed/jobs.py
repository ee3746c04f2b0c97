"""The typed jobs a node runs for the control plane, each checked against what it allows."""

import asyncio
import hashlib
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from domain.command_specs import (
    BenchmarkSmoke,
    CommandSpec,
    ModelInstall,
    ModelRemove,
    RouteHealthCheck,
    RuntimeProbe,
    SetProfilePolicy,
    SupportBundle,
)
from node.catalog import GGUF_KIND, ModelSource
from node.runtime.base import Message, SamplingParams
from node.services import PROFILE_POLICY, NodeServices

SMOKE_PROMPT = "Count from one to five."
SMOKE_SEED = 7


class JobRefused(Exception):
    """The node does not allow this job: a stable code, sent back signed."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class JobFailed(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


Output = dict[str, Any]


class Jobs:
    def __init__(self, services: NodeServices, agent_version: str) -> None:
        self.services = services
        self.agent_version = agent_version
        self._handlers: dict[type, Callable[[Any], Awaitable[Output]]] = {
            BenchmarkSmoke: self.benchmark_smoke,
            RuntimeProbe: self.runtime_probe,
            RouteHealthCheck: self.route_health_check,
            ModelInstall: self.model_install,
            ModelRemove: self.model_remove,
            SupportBundle: self.support_bundle,
            SetProfilePolicy: self.set_profile_policy,
        }

    async def run(self, spec: CommandSpec) -> Output:
        kind = type(spec).__struct_config__.tag
        if kind not in self.services.settings.allowed_command_kinds:
            raise JobRefused("command_not_allowed")
        return await self._handlers[type(spec)](spec)

    async def benchmark_smoke(self, spec: BenchmarkSmoke) -> Output:
        runtime = self.services.runtimes.get(spec.model)
        if runtime is None or runtime.failure is not None:
            raise JobRefused("model_not_serving")
        params = SamplingParams(max_tokens=spec.max_tokens, temperature=0.0, seed=SMOKE_SEED)
        done = await runtime.complete([Message("user", SMOKE_PROMPT)], params, time.perf_counter())
        seconds = max(done.latency_ms - done.ttft_ms, 1e-3) / 1000
        return {
            "model": spec.model,
            "runtime_kind": runtime.kind,
            "ttft_ms": round(done.ttft_ms, 3),
            "latency_ms": round(done.latency_ms, 3),
            "completion_tokens": done.completion_tokens,
            "tokens_per_s": round(done.completion_tokens / seconds, 3),
            "output_sha256": hashlib.sha256(done.text.encode()).hexdigest(),
            # The node's own claim: it never counts as an observed benchmark.
            "evidence": "benchmark_verified",
        }

    async def runtime_probe(self, spec: RuntimeProbe) -> Output:
        runtimes = self.services.runtimes
        names = [spec.model] if spec.model else sorted(runtimes)
        if spec.model and spec.model not in runtimes:
            raise JobFailed("model_not_found")
        return {
            "runtimes": [
                {
                    "model": name,
                    "runtime_kind": runtimes[name].kind,
                    "reachable": runtimes[name].failure is None,
                    "queue_health": runtimes[name].queue_health,
                    "queue_depth": runtimes[name].queue_depth,
                }
                for name in names
            ]
        }

    async def route_health_check(self, _: RouteHealthCheck) -> Output:
        runtimes = self.services.runtimes.values()
        return {
            "runtimes_serving": sum(1 for r in runtimes if r.failure is None),
            "runtimes_total": len(self.services.runtimes),
        }

    async def model_install(self, spec: ModelInstall) -> Output:
        source = _allowed_source(spec.source, self.services.settings.model_source_dirs)
        digest = await asyncio.to_thread(_sha256_file, source)
        if digest != spec.sha256:
            raise JobFailed("sha256_mismatch")
        target = self.services.settings.models_dir / f"{spec.name}.gguf"
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copyfile, source, target)
        model = ModelSource(name=spec.name, runtime_kind=GGUF_KIND, source=str(target))
        self.services.models.add(model)
        previous = self.services.runtimes.pop(spec.name, None)
        if previous is not None:
            await previous.close()
        runtime = self.services.runtime_for(model)
        await runtime.start()
        self.services.runtimes[spec.name] = runtime
        self.services.sources = [s for s in self.services.sources if s.name != spec.name]
        self.services.sources.append(model)
        return {"model": spec.name, "sha256": digest, "serving": runtime.failure is None}

    async def model_remove(self, spec: ModelRemove) -> Output:
        known = any(s.name == spec.name for s in self.services.sources)
        if not known:
            raise JobFailed("model_not_found")
        self.services.models.remove(spec.name)
        self.services.sources = [s for s in self.services.sources if s.name != spec.name]
        runtime = self.services.runtimes.pop(spec.name, None)
        if runtime is not None:
            await runtime.close()
        return {"model": spec.name, "removed": True}

    async def set_profile_policy(self, spec: SetProfilePolicy) -> Output:
        if not any(s.name == spec.model for s in self.services.sources):
            raise JobFailed("model_not_found")
        policy = {
            "network_eligible": spec.network_eligible,
            "paid_route_eligible": spec.paid_route_eligible,
            "route_tier": spec.route_tier,
        }
        self.services.db.set_meta(PROFILE_POLICY + spec.model, msgspec.json.encode(policy).decode())
        return {"model": spec.model, "policy": {k: v for k, v in policy.items() if v is not None}}

    async def support_bundle(self, _: SupportBundle) -> Output:
        s = self.services
        inventory = s.inventory
        bundle: Output = {
            "node_id": s.identity.node_id,
            "key_id": s.identity.signer.key_id,
            "agent_version": self.agent_version,
            "uptime_s": round(time.time() - s.started_at),
            "inventory": None
            if inventory is None
            else {
                "os": inventory.os,
                "arch": inventory.arch,
                "cpu_count": inventory.cpu_count,
                "ram_total_mib": inventory.ram_total_mib,
                "gpus": [g.name for g in inventory.gpus],
            },
            "profiles": [
                {
                    "model": p.model,
                    "status": p.status,
                    "runtime_kind": p.runtime_kind,
                    "route_tier": p.route_tier,
                    "queue_health": p.queue_health,
                    "detail": p.detail,
                }
                for p in s.profiles()
            ],
            "local_keys": len(s.keys.list()),
            "receipts": s.receipts.count(),
            "commands_allowed": sorted(s.settings.allowed_command_kinds),
        }
        redacted: Output = redact(bundle, [str(s.settings.state_dir), str(Path.home())])
        return redacted


_PATHLIKE = re.compile(r"(?:[A-Za-z]:)?[/\\][^\s\"']+")
_SECRETLIKE = re.compile(r"b3iq_[a-z]+_[A-Za-z0-9_-]+")


def redact(value: Any, roots: list[str]) -> Any:
    """Paths and anything shaped like a B3IQ secret are replaced, however they got in."""
    if isinstance(value, dict):
        return {k: redact(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            if root and root != "/":
                value = value.replace(root, "[path]")
        value = _SECRETLIKE.sub("[secret]", value)
        return _PATHLIKE.sub("[path]", value)
    return value


def _allowed_source(source: str, allowed: list[Path]) -> Path:
    if "://" in source:
        raise JobRefused("source_not_allowed")  # downloads are not a job this node runs
    path = Path(source).expanduser().resolve()
    roots = [root.resolve() for root in allowed]
    if not any(path.is_relative_to(root) for root in roots):
        raise JobRefused("source_not_allowed")
    if not path.is_file():
        raise JobFailed("source_missing")
    return path


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
