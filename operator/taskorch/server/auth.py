"""Who is calling, and may they: the caller's own Kubernetes bearer token is checked with a
TokenReview, and every action with a SubjectAccessReview on the taskorch resource and namespace
it touches, so nobody does through the server what RBAC would not let them do with kubectl.

The decisions are the API server's; this module only asks, and remembers an answer for a few
seconds (as the API server's own webhook authenticator does) so a busy dashboard does not cost
two reviews per request."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from cachetools import TTLCache

from taskorch.api.base import GROUP

log = logging.getLogger("taskorch.server.auth")

READ_VERBS = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class Caller:
    """An authenticated user, as the API server knows them."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())
    anonymous: bool = False  # no token: the server's own identity, read-only


class Action(NamedTuple):
    """What a request does, as RBAC names it: `create tasks` in `team-a`."""

    verb: str
    resource: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}.{GROUP} in namespace {self.namespace}"


class Unauthenticated(Exception):
    """401: no token, or one the API server does not accept."""


class Forbidden(Exception):
    """403: RBAC (or the server's read-only mode) does not allow the action."""


class Reviewer(Protocol):
    """The two reviews the API server answers (KubeReviewer; a fake in unit tests)."""

    async def review_token(self, token: str) -> Caller | None: ...

    async def review_access(self, caller: Caller, action: Action) -> tuple[bool, str]: ...

    async def whoami(self) -> Caller: ...


class Gate:
    """Turns a request's bearer token into a Caller and lets an Action through or not."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        read_only: bool = False,
        anonymous_read: bool = False,
        cache_seconds: float = 10.0,
        cache_size: int = 4096,
    ) -> None:
        self.reviewer = reviewer
        self.read_only = read_only
        self.anonymous_read = anonymous_read
        self._tokens: TTLCache[str, Caller | None] = TTLCache(cache_size, cache_seconds)
        self._decisions: TTLCache[tuple[Caller, Action], tuple[bool, str]] = TTLCache(
            cache_size, cache_seconds
        )
        self._self: Caller | None = None

    async def caller(self, authorization: str | None) -> Caller:
        """The caller of a request with this Authorization header; Unauthenticated if none."""
        token = _bearer(authorization)
        if token is None:
            if not self.anonymous_read:
                raise Unauthenticated(
                    "no bearer token: send 'Authorization: Bearer <token>' "
                    "(e.g. $(kubectl create token <serviceaccount>))"
                )
            if self._self is None:
                me = await self.reviewer.whoami()
                self._self = Caller(me.username, me.uid, me.groups, me.extra, anonymous=True)
            return self._self
        key = hashlib.sha256(token.encode()).hexdigest()
        if key in self._tokens:
            cached = self._tokens[key]
        else:
            cached = self._tokens[key] = await self.reviewer.review_token(token)
        if cached is None:
            raise Unauthenticated("the API server does not accept this token (TokenReview)")
        return cached

    async def check(self, caller: Caller, action: Action) -> None:
        """Return if the caller may do the action; raise Forbidden naming it otherwise."""
        if action.verb not in READ_VERBS:
            if self.read_only:
                raise Forbidden(f"the server runs read-only: it does not {action}")
            if caller.anonymous:
                raise Forbidden(f"anonymous access is read-only: send a token to {action}")
        key = (caller, action)
        if key in self._decisions:
            allowed, reason = self._decisions[key]
        else:
            allowed, reason = self._decisions[key] = await self.reviewer.review_access(
                caller, action
            )
        if not allowed:
            who = "anonymous (the server's own account)" if caller.anonymous else caller.username
            raise Forbidden(f"{who} may not {action}" + (f": {reason}" if reason else ""))

    async def allowed(self, caller: Caller, action: Action) -> bool:
        try:
            await self.check(caller, action)
        except Forbidden:
            return False
        return True


def token_of(authorization: str | None) -> str | None:
    """The token of a well-formed `Bearer` header, else None."""
    try:
        return _bearer(authorization)
    except Unauthenticated:
        return None


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
