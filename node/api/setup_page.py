"""The setup page: claim with the setup token, then an owner session manages keys."""

import time
from pathlib import Path
from typing import Any

import jinja2
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from node.api.auth import services_of
from node.errors import NodeError
from node.keys import ANY
from node.services import NodeServices

SESSION_COOKIE = "b3iq_owner"
MIN_PASSWORD = 8
_NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)


def _html(name: str, status: int = 200, **context: Any) -> Response[str]:
    body = _templates.get_template(name).render(**context)
    return Response(body, status_code=status, media_type="text/html", headers=_NO_STORE)


def _session(request: Request[Any, Any, Any]) -> str | None:
    token = request.cookies.get(SESSION_COOKIE)
    return token if services_of(request).owner.session_valid(token) else None


def _signed_in(request: Request[Any, Any, Any], token: str) -> Response[Any]:
    response = Redirect("/setup/", status_code=303)
    response.set_cookie(
        Cookie(
            key=SESSION_COOKIE,
            value=token,
            path="/setup",
            httponly=True,
            samesite="strict",
            max_age=services_of(request).settings.session_ttl_s,
        )
    )
    return response


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def _dashboard(
    services: NodeServices, session: str, status: int = 200, **extra: Any
) -> Response[str]:
    now = time.time()
    profiles = services.profiles()
    keys = [
        {
            "public_id": k.public_id,
            "name": k.name,
            "models": k.models,
            "endpoints": k.endpoints,
            "status": k.status(now),
            "expires": _when(k.expires_at) or "never",
            "last_used": _when(k.last_used_at) or "never",
        }
        for k in services.keys.list()
    ]
    receipts = [
        {"time": _when(r.body.created_at_ms / 1000), "body": r.body, "receipt_hash": r.receipt_hash}
        for r in services.receipts.recent(20)
    ]
    ready = any(p.status == "installed" and p.queue_health != "unhealthy" for p in profiles)
    return _html(
        "dashboard.html",
        status,
        node_id=services.identity.node_id,
        key_id=services.identity.signer.key_id,
        readiness="local-ready" if ready else "not ready",
        inventory=services.inventory,
        profiles=profiles,
        keys=keys,
        receipts=receipts,
        csrf=services.owner.csrf_token(session),
        **extra,
    )


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


def _check_csrf(services: NodeServices, session: str, form: dict[str, str]) -> None:
    if form.get("csrf") != services.owner.csrf_token(session):
        raise NodeError(403, "csrf_failed", "the form is stale; reload the setup page")


@get("/setup/", sync_to_thread=False, include_in_schema=False)
def setup_home(
    request: Request[Any, Any, Any], token: FromQuery[str | None] = None
) -> Response[Any]:
    services = services_of(request)
    session = _session(request)
    if session is not None and token is None:
        return _dashboard(services, session)
    return _html("claim.html", claimed=services.owner.claimed, token=token)


@post("/setup/claim", include_in_schema=False)
async def claim(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request)
    form = await _form(request)
    password = form.get("password", "")
    if len(password) < MIN_PASSWORD:
        return _html("claim.html", 400, claimed=False, error="choose a longer password")
    if not services.owner.claim(form.get("setup_token", ""), password):
        return _html(
            "claim.html", 401, claimed=services.owner.claimed, error="setup token not valid"
        )
    return _signed_in(request, services.owner.open_session())


@post("/setup/login", include_in_schema=False)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request)
    form = await _form(request)
    if not services.owner.login(form.get("password", "")):
        return _html("claim.html", 401, claimed=True, error="wrong password")
    return _signed_in(request, services.owner.open_session())


@post("/setup/logout", include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    session = _session(request)
    if session is not None:
        _check_csrf(services_of(request), session, await _form(request))
        services_of(request).owner.close_session(session)
    response = Redirect("/setup/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/setup")
    return response


def _scopes(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip()) or (ANY,)


@post("/setup/keys", include_in_schema=False)
async def create_key(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request)
    session = _session(request)
    if session is None:
        return Redirect("/setup/", status_code=303)
    form = await _form(request)
    _check_csrf(services, session, form)
    days = form.get("expires_days", "").strip()
    if days and not (days.isascii() and days.isdigit() and len(days) <= 5):
        return _dashboard(services, session, 400, error="expiry must be a number of days")
    try:
        key, secret = services.keys.create(
            form.get("name", "").strip()[:64] or "unnamed",
            models=_scopes(form.get("models", "")),
            endpoints=_scopes(form.get("endpoints", "")),
            expires_at=time.time() + int(days) * 86400 if days else None,
        )
    except NodeError as exc:
        return _dashboard(services, session, 400, error=exc.message)
    return _dashboard(services, session, new_secret=secret, new_key_name=key.name)


@post("/setup/keys/{public_id:str}/revoke", include_in_schema=False)
async def revoke_key(request: Request[Any, Any, Any], public_id: FromPath[str]) -> Response[Any]:
    services = services_of(request)
    session = _session(request)
    if session is None:
        return Redirect("/setup/", status_code=303)
    _check_csrf(services, session, await _form(request))
    services.keys.revoke(public_id)
    return Redirect("/setup/", status_code=303)


ROUTES = [setup_home, claim, login, logout, create_key, revoke_key]
