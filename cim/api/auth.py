"""Authentication, roles and the audit trail: one ASGI middleware in front of every route.

Underground pipelines (地下管线) and their nodes are sensitive: only some roles may read them, in any form.
Rather than each route checking, the middleware decides from the request alone, so routes added later are
covered without changing them. A request *names* a restricted collection when

- a path segment is the collection's id (``/collections/pipelines/...``, ``/3dtiles/pipelines/...``, also
  ``pipelines.json``, ``pipelines-cim3``: the id followed by ``-``, ``_``, ``.`` or ``@``);
- a query value is, or lists, it (``/tiles/...?collections=buildings,pipelines``);
- its body (a process execution's inputs, a feature written) holds it as a word (``"layers": ["pipelines"]``).

Such a request needs one of the collection's roles (``cim.auth.restricted``). Writes (POST, PUT, PATCH,
DELETE, except the POSTs that only read: process executions) need a ``write_roles`` role, and paths matching
``cim.auth.paths`` patterns their roles. Routes that serve every collection unless ``collections=`` selects
some (combined vector tiles) get, for a principal who may not read everything, the selection of what it may
read. Listings (``/collections``, ``/openapi``, ``/processes``...) leave out the restricted collections a
principal may not read: anonymous users do not see that they exist.

Credentials: an API key in ``X-API-Key`` (checked against SHA-256 hashes in the configuration) or a JWT in
``Authorization: Bearer`` (pyjwt; roles from a claim). Missing or invalid credentials where some are needed
→ 401 with ``WWW-Authenticate``; valid ones without the role → 403; both as OGC exception JSON that names
no data. Every write, every request naming a restricted collection and every refusal is audited: a JSON
line on the ``cim.audit`` logger and a row of ``audit_log`` (:mod:`cim.db.audit`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cim.api.limits import BodyTooLarge
from cim.api.middleware import BodyRewriter, read_body, replay
from cim.settings import AuthSettings

log = logging.getLogger("cim.audit")

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
MAX_BODY = 64 * 1024 * 1024  # request bodies are read whole to find the collections they name
REALM = "benxi-cim"
# listings that would name every collection: restricted ones a principal may not read are left out
LISTINGS = ("/", "/collections", "/openapi", "/processes", "/processes/*", "/tiles", "/tiles/*", "/indicators",
            "/map/style.json", "/3dgeovolumes", "/3dgeovolumes/collections")
_WORD = re.compile(r"[\w\-]+")
_JOB = re.compile(r"/jobs/([\w\-]+)")  # a job's status, results and result files (in a path or a Location)
_ID_END = "-_.@"


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key's name or a token's subject, with roles."""

    name: str
    roles: frozenset[str]
    auth: str  # "api-key", "jwt", "anonymous"

    @property
    def anonymous(self) -> bool:
        return self.auth == "anonymous"


ANONYMOUS = Principal("anonymous", frozenset(), "anonymous")


class InvalidCredentials(Exception):
    """Credentials were sent and are not valid (unknown key, bad or expired token)."""


def key_hash(key: str) -> str:
    """The SHA-256 an API key is stored as (``cim auth hash-key``)."""
    return hashlib.sha256(key.encode()).hexdigest()


def names_in(text: str, names: Iterable[str]) -> set[str]:
    """The ``names`` (lower-case collection ids) that ``text`` holds as words, or as a word's beginning
    followed by ``-``, ``_``, ``.`` or ``@`` (``pipelines-cim3``, ``pipelines.json``), ignoring case."""
    names = list(names)
    found: set[str] = set()
    for word in _WORD.findall(text.lower()):
        for n in names:
            if word == n or (word.startswith(n) and word[len(n)] in _ID_END):
                found.add(n)
    return found


@dataclass
class Policy:
    """The configured rules, ready to answer per request."""

    settings: AuthSettings
    collections: list[str]  # every collection the app serves (listings, combined-route selections)
    combined: list[str]  # the collections combined routes serve when none is selected
    restricted: dict[str, frozenset[str]] = field(init=False)
    keys: dict[str, Principal] = field(init=False)
    jwt_key: Any = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        known = set(s.roles)
        used = {r for roles in s.restricted.values() for r in roles} | set(s.write_roles) | \
               {r for rule in s.paths for r in rule.roles} | {r for k in s.keys for r in k.roles}
        if known and (unknown := used - known):
            raise ValueError(f"cim.auth: roles {sorted(unknown)} are used but not declared in cim.auth.roles")
        self.restricted = {c.lower(): frozenset(roles) for c, roles in s.restricted.items()}
        self.keys = {k.sha256.lower(): Principal(k.name, frozenset(k.roles), "api-key") for k in s.keys}
        self.jwt_key = s.jwt_secret

    # ------------------------------------------------------------------ who
    def authenticate(self, headers: dict[bytes, bytes]) -> Principal:
        key = headers.get(b"x-api-key")
        authz = headers.get(b"authorization", b"").decode("latin-1").strip()
        if key is not None:
            principal = self.keys.get(key_hash(key.decode("latin-1").strip()))
            if principal is None:
                raise InvalidCredentials("unknown API key")
            return principal
        if authz:
            scheme, _, token = authz.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidCredentials("use Authorization: Bearer <JWT> or X-API-Key: <key>")
            return self._token(token.strip())
        return ANONYMOUS

    def _token(self, token: str) -> Principal:
        s = self.settings
        if not self.jwt_key:
            raise InvalidCredentials("bearer tokens are not accepted here")
        try:
            claims = jwt.decode(token, self.jwt_key, algorithms=s.jwt_algorithms, audience=s.jwt_audience,
                                issuer=s.jwt_issuer, options={"require": ["exp", "sub"]})
        except jwt.PyJWTError as exc:
            raise InvalidCredentials(f"invalid token: {exc}") from None
        roles = claims.get(s.jwt_roles_claim, [])
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list):
            raise InvalidCredentials(f"invalid token: claim {s.jwt_roles_claim!r} is not a list of roles")
        return Principal(str(claims["sub"]), frozenset(map(str, roles)), "jwt")

    # ------------------------------------------------------------------ what
    def hidden(self, principal: Principal) -> set[str]:
        """Restricted collections this principal may not read."""
        return {c for c, roles in self.restricted.items() if not roles & principal.roles}

    def is_write(self, method: str, path: str, process_id: str | None) -> bool:
        if method not in WRITE_METHODS:
            return False
        if method == "POST" and any(fnmatch.fnmatchcase(path, p) for p in self.settings.read_posts):
            return process_id in self.settings.write_processes
        return True

    def path_roles(self, path: str) -> list[frozenset[str]]:
        return [frozenset(rule.roles) for rule in self.settings.paths if fnmatch.fnmatchcase(path, rule.pattern)]

    def is_combined(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in self.settings.combined_paths)

    def is_listing(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in LISTINGS)

    def is_derived(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in self.settings.derived_paths)


def normalise(path: str) -> str:
    """One spelling per path: no repeated or trailing slashes."""
    return "/" + "/".join(p for p in path.split("/") if p)


def _exception(status: int, description: str, invalid: bool = False) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    code = "NotAuthorized" if status == HTTPStatus.UNAUTHORIZED else "Forbidden"
    headers = [(b"content-type", b"application/json")]
    if status == HTTPStatus.UNAUTHORIZED:
        challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
        headers.append((b"www-authenticate", challenge.encode()))
    return {"code": code, "type": code, "description": description}, headers


class AuthMiddleware:
    """Authenticates, authorises, audits; see the module docstring."""

    def __init__(self, app: ASGIApp, policy: Policy, audit: Any = None, jobs_dir: Path | None = None) -> None:
        self.app, self.policy = app, policy
        self.audit = audit  # callable(list[entry]) writing audit rows, or None
        # the restricted collections each asynchronous job's execution named, one file per job beside
        # pygeoapi's job store (so every worker sees them): /jobs/{id}/... of a pipeline download is then
        # refused like the pipelines themselves, not a capability URL anyone holding the id may fetch
        self.job_access = jobs_dir / "access" if jobs_dir is not None else None
        if not log.handlers:  # one JSON line per entry on stderr, whatever the server's log level
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.settings.enabled:
            await self.app(scope, receive, send)
            return
        policy = self.policy
        method = scope["method"].upper()
        path = normalise(scope.get("path", "/"))
        headers = dict(scope.get("headers", []))
        started = datetime.now(UTC)
        try:
            principal = policy.authenticate({k.lower(): v for k, v in headers.items()})
            invalid = None
        except InvalidCredentials as exc:
            principal, invalid = ANONYMOUS, str(exc)

        # the collections the request names: path, query values, body
        restricted = policy.restricted
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        named = names_in(path, restricted) | names_in(" ".join(v for _, v in query), restricted)
        if (job := _JOB.match(path)) and self.job_access is not None:
            named |= await run_in_threadpool(self._job_collections, job.group(1))
        if method in WRITE_METHODS or headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers:
            try:
                body = await read_body(receive, MAX_BODY)
            except BodyTooLarge:  # counted by cim.api.limits.BodyLimit, outside
                body = None
            if body is None:
                await self._send_error(send, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large",
                                       code="PayloadTooLarge")
                return
            named |= names_in(body.decode("utf-8", "replace"), restricted)
            receive = replay(body, receive)

        process_id = path.split("/")[2] if path.startswith("/processes/") and path.count("/") >= 3 else None
        write = policy.is_write(method, path, process_id)
        needed = [restricted[c] for c in sorted(named)] + policy.path_roles(path)
        if write:
            needed.append(frozenset(policy.settings.write_roles))
        missing = [roles for roles in needed if not roles & principal.roles]

        def audit_entry() -> dict[str, Any]:
            return {"at": started, "principal": principal.name, "auth": principal.auth,
                     "roles": sorted(principal.roles), "action": "write" if write else "read", "method": method,
                     "path": path, "query": scope.get("query_string", b"").decode("latin-1") or None,
                     "collections": sorted(named) or None, "status": 0,
                     "client": (scope.get("client") or ("",))[0] or None}

        if invalid or missing:
            if invalid:
                status, text = HTTPStatus.UNAUTHORIZED, f"invalid credentials: {invalid}"
            elif principal.anonymous:
                status, text = HTTPStatus.UNAUTHORIZED, \
                    "authentication required: send an API key (X-API-Key) or a bearer token (Authorization: Bearer)"
            else:
                status, text = HTTPStatus.FORBIDDEN, f"{principal.name} has no role allowed to " + \
                    ("write here" if write and not named else "read this resource")
            await self._send_error(send, status, text, invalid=invalid is not None)
            await self._record({**audit_entry(), "action": "denied", "status": int(status)})
            return

        # the scope itself, not a copy: outer middlewares (request log, metrics) read what the router sets in it
        scope["cim.principal"] = principal
        hidden = policy.hidden(principal)
        scope["cim.hidden"] = hidden
        revealed: set[str] = set()
        scope["cim.revealed"] = revealed  # restricted collections a derived document showed (ListingScrubber)
        if hidden and method in ("GET", "HEAD") and policy.is_combined(path) and \
                not any(k == "collections" for k, _ in query):
            allowed = [c for c in policy.combined if c.lower() not in hidden]
            scope["query_string"] = urlencode([*query, ("collections", ",".join(allowed))]).encode()

        status_seen: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                if named and process_id and self.job_access is not None:
                    location = dict(message.get("headers", [])).get(b"location", b"").decode("latin-1")
                    if job := _JOB.search(location):
                        await run_in_threadpool(self._record_job, job.group(1), named)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if write or named or revealed:
                entry = audit_entry()
                entry["collections"] = sorted(named | revealed) or None
                entry["status"] = status_seen[0] if status_seen else 500
                await self._record(entry)

    def _record_job(self, job_id: str, collections: set[str]) -> None:
        assert self.job_access is not None
        self.job_access.mkdir(parents=True, exist_ok=True)
        tmp = self.job_access / f".{job_id}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(sorted(collections)), encoding="utf-8")
        tmp.replace(self.job_access / f"{job_id}.json")

    def _job_collections(self, job_id: str) -> set[str]:
        assert self.job_access is not None
        try:
            return set(json.loads((self.job_access / f"{job_id}.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return set()

    async def _send_error(self, send: Send, status: int, text: str, invalid: bool = False,
                          code: str | None = None) -> None:
        doc, headers = _exception(status, text, invalid)
        if code:
            doc["code"] = doc["type"] = code
        body = json.dumps(doc, ensure_ascii=False).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": int(status), "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _record(self, entry: dict[str, Any]) -> None:
        log.info(json.dumps({**entry, "at": entry["at"].isoformat()}, ensure_ascii=False))
        if self.audit is not None:
            try:
                await run_in_threadpool(self.audit, [entry])
            except Exception as exc:  # auditing never fails the request; the log line above is kept
                log.error("audit entry not written to the database: %s", str(exc).splitlines()[0])


class ListingScrubber(BodyRewriter):
    """Leaves out of JSON and HTML documents what names a restricted collection the principal may not read
    (``scope["cim.hidden"]``, set by AuthMiddleware): collections in listings, OpenAPI paths and tags, process
    input enums, and the objects of derived documents (a case overlay's related pipe nodes, a job's results)
    that link to one. Derived documents are read for every principal: what they showed of a restricted
    collection goes to ``scope["cim.revealed"]``, and so to the audit log."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        super().__init__(app)
        self.policy = policy

    def applies(self, scope: Scope) -> bool:
        path = normalise(scope.get("path", "/"))
        if "cim.hidden" not in scope:
            return False
        if self.policy.is_derived(path):
            return True
        return bool(scope["cim.hidden"]) and scope.get("method") in ("GET", "HEAD") and self.policy.is_listing(path)

    def buffers(self, content_type: bytes, status: int) -> bool:
        return status in (200, 201) and (b"json" in content_type or content_type.startswith(b"text/html"))

    def rewrite(self, scope: Scope, body: bytes) -> bytes:
        hidden = scope["cim.hidden"]
        if body.lstrip()[:1] in (b"{", b"["):
            try:
                doc = json.loads(body)
            except ValueError:
                return body
            revealed: set[str] = set()
            out = scrub(doc, hidden, set(self.policy.restricted), revealed)
            scope["cim.revealed"].update(revealed)
            return body if not hidden else json.dumps(out, ensure_ascii=False).encode()
        if not hidden:
            return body
        html = body.decode("utf-8", "replace")
        # pygeoapi's HTML listings: one table row per collection
        html = re.sub(r"<tr>(?:(?!<tr>).)*?</tr>",
                      lambda m: "" if _links_to(m.group(0), hidden) else m.group(0), html, flags=re.S)
        return html.encode()


def _links_to(html: str, hidden: set[str]) -> bool:
    return any(names_in(href, hidden) for href in re.findall(r'href="([^"]*)"', html))


_DROP = object()


def scrub(doc: Any, hidden: set[str], restricted: set[str] | None = None, revealed: set[str] | None = None) -> Any:
    """``doc`` without what names a hidden collection: objects whose id, name or collection is one, links
    to one, keys naming one (OpenAPI paths), strings that are one (enums). The restricted collections that
    objects kept link to are added to ``revealed``."""
    restricted = restricted or set()

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            for k in ("id", "name", "collection", "source-layer"):
                # an id that is, or begins as, a hidden collection's (a style layer "pipelines-casing")
                if isinstance(value.get(k), str) and _WORD.fullmatch(value[k]) and names_in(value[k], hidden):
                    return _DROP
            if isinstance(value.get("href"), str):
                if names_in(value["href"], hidden):
                    return _DROP
                if revealed is not None:
                    revealed.update(names_in(value["href"], restricted))
            if revealed is not None and isinstance(value.get("collection"), str) and \
                    value["collection"].lower() in restricted:
                revealed.add(value["collection"].lower())
            out = {}
            for k, v in value.items():
                if names_in(str(k), hidden):
                    continue
                w = walk(v)
                if w is not _DROP:
                    out[k] = w
            return out
        if isinstance(value, list):
            return [w for w in map(walk, value) if w is not _DROP]
        if isinstance(value, str) and value.lower() in hidden:
            return _DROP
        return value

    result = walk(doc)
    return {} if result is _DROP else result
