"""Short-lived TURN credentials: coturn's REST-API scheme (`use-auth-secret`).

The server and coturn share one secret (`TURN_SECRET`, coturn's `static-auth-secret`);
the secret itself never leaves the server. Each credential is minted on demand:
the username is the Unix time it expires at and a random label of its own (so coturn's
`user-quota` counts per credential), the password is base64(HMAC-SHA1(secret, username)),
which coturn recomputes, and coturn refuses it once that time has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

USER_LABEL = "voice"  # + "-<8 hex digits>" per credential


def turn_credential(secret: str, username: str) -> str:
    """coturn's password for `username`: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


@dataclass(frozen=True)
class TurnConfig:
    urls: tuple[str, ...]
    secret: str = field(repr=False)
    ttl_s: int = 3600

    def ice_server(self, now: float | None = None) -> dict[str, Any]:
        """A fresh `{"urls", "username", "credential"}` entry valid for `ttl_s` seconds from `now`."""
        expiry = int(time.time() if now is None else now) + self.ttl_s
        username = f"{expiry}:{USER_LABEL}-{secrets.token_hex(4)}"
        return {"urls": list(self.urls), "username": username, "credential": turn_credential(self.secret, username)}
