"""A virtual key: its record (never the key itself) and how a key is made and recognised.

A key is ``epk_`` and 32 random base-62 characters (190 bits). The store keeps its SHA-256
digest, never the key: a key this random cannot be guessed from its digest, so a slow password
hash would only slow every request down (docs/keys.md). The redactor knows the ``epk_`` shape
(``telemetry.redact``): a key that reaches a log line or an upstream's error is scrubbed.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from edgeproxy.snapshot.limits import NO_LIMITS, Budget, Limits

KEY_PREFIX = "epk_"
_ALPHABET = string.ascii_letters + string.digits
_SECRET_CHARS = 32
FORMAT = 1


def digest_of(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """A key's record as stored (no secret in it: ``hint`` shows its last four characters)."""

    id: str  # "key_" + 12 hex: what `keys revoke` and usage rows name
    name: str
    digest: str
    hint: str  # "epk_…Ab3d"
    created: float  # epoch seconds
    team: str | None = None
    limits: Limits = NO_LIMITS
    routes: tuple[str, ...] = ()  # the routes it may use; empty: every route
    expires: float | None = None  # epoch seconds; None: never
    revoked: float | None = None  # epoch seconds, once revoked
    extra: dict[str, Any] = field(default_factory=dict)  # fields of a newer format, kept

    def refusal(self, now: float) -> str | None:
        """Why the key cannot be used at ``now``, or None."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return None

    def allows(self, route: str) -> bool:
        return not self.routes or route in self.routes

    def to_json(self) -> bytes:
        limits = self.limits
        return orjson.dumps(
            {
                **self.extra,
                "v": FORMAT,
                "id": self.id,
                "name": self.name,
                "digest": self.digest,
                "hint": self.hint,
                "created": self.created,
                "team": self.team,
                "rpm": limits.rpm,
                "tpm": limits.tpm,
                "budget": str(limits.budget) if limits.budget is not None else None,
                "routes": list(self.routes),
                "expires": self.expires,
                "revoked": self.revoked,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> VirtualKey:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a key record is a JSON object")
        known = {
            "v", "id", "name", "digest", "hint", "created", "team", "rpm", "tpm", "budget",
            "routes", "expires", "revoked",
        }  # fmt: skip
        budget = data.get("budget")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            digest=str(data["digest"]),
            hint=str(data.get("hint", "")),
            created=float(data.get("created", 0.0)),
            team=data.get("team"),
            limits=Limits(
                rpm=data.get("rpm"),
                tpm=data.get("tpm"),
                budget=Budget.parse(budget) if budget else None,
            ),
            routes=tuple(data.get("routes") or ()),
            expires=data.get("expires"),
            revoked=data.get("revoked"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def revoke(self, now: float) -> VirtualKey:
        return replace(self, revoked=now)


def make_key(
    name: str,
    *,
    now: float,
    team: str | None = None,
    limits: Limits = NO_LIMITS,
    routes: tuple[str, ...] = (),
    expires: float | None = None,
) -> tuple[str, VirtualKey]:
    """A new key and its record: the key is returned once, to be shown once."""
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS))
    key = KEY_PREFIX + secret
    record = VirtualKey(
        id=f"key_{secrets.token_hex(6)}",
        name=name,
        digest=digest_of(key),
        hint=f"{KEY_PREFIX}…{secret[-4:]}",
        created=now,
        team=team,
        limits=limits,
        routes=routes,
        expires=expires,
    )
    return key, record


def parse_expiry(text: str) -> float:
    """``2025-12-31`` (the key stops working at 00:00 UTC that day) or an ISO date-time (UTC
    unless it names its zone), as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--expires takes a date (2025-12-31) or a date-time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
