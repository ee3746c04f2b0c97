"""The typed jobs an operator may ask a node to run: a closed set, never a shell (pure)."""

from typing import Annotated

import msgspec
from msgspec import Meta

ModelName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Source = Annotated[str, Meta(min_length=1, max_length=1024)]
ROUTE_TIERS = (
    "local_convenience",
    "portable_local",
    "network_beta",
    "datacenter_optimized",
    "fleet_orchestrated",
    "unknown",
)


class _Spec(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", forbid_unknown_fields=True
):
    pass


class BenchmarkSmoke(_Spec, frozen=True, kw_only=True, tag="benchmark_smoke"):
    """Run the fixed smoke prompt through a local model; the result is self-reported."""

    model: ModelName
    max_tokens: Annotated[int, Meta(ge=1, le=256)] = 16


class RuntimeProbe(_Spec, frozen=True, kw_only=True, tag="runtime_probe"):
    model: ModelName | None = None
    """None probes every runtime."""


class RouteHealthCheck(_Spec, frozen=True, kw_only=True, tag="route_health_check"):
    pass


class ModelInstall(_Spec, frozen=True, kw_only=True, tag="model_install"):
    name: ModelName
    source: Source
    """A path under one of the node's allowed model sources (the node decides)."""
    sha256: Sha256


class ModelRemove(_Spec, frozen=True, kw_only=True, tag="model_remove"):
    name: ModelName


class SupportBundle(_Spec, frozen=True, kw_only=True, tag="support_bundle"):
    pass


class SetProfilePolicy(_Spec, frozen=True, kw_only=True, tag="set_profile_policy"):
    model: ModelName
    network_eligible: bool | None = None
    paid_route_eligible: bool | None = None
    route_tier: Annotated[str, Meta(pattern="^(" + "|".join(ROUTE_TIERS) + ")$")] | None = None


CommandSpec = (
    BenchmarkSmoke
    | RuntimeProbe
    | RouteHealthCheck
    | ModelInstall
    | ModelRemove
    | SupportBundle
    | SetProfilePolicy
)
KINDS: tuple[str, ...] = tuple(
    str(cls.__struct_config__.tag)
    for cls in (
        BenchmarkSmoke,
        RuntimeProbe,
        RouteHealthCheck,
        ModelInstall,
        ModelRemove,
        SupportBundle,
        SetProfilePolicy,
    )
)
