"""The fix for a Redis that cannot be used, from the error it gave."""

from __future__ import annotations


def redis_fix(error: str, key: str) -> str:
    """What to change when the Redis named by config key ``key`` failed with ``error``."""
    text = error.lower()
    # redis-py 8 opens with HELLO 3, which a Redis wanting a password answers with
    # "HELLO must be called with the client already authenticated".
    if "noauth" in text or "authentication required" in text or "already authenticated" in text:
        return (
            f"it needs a password: put it in {key} as redis://:PASSWORD@HOST:PORT/DB "
            "(or redis://USER:PASSWORD@... for an ACL user)"
        )
    if "wrongpass" in text or "invalid username-password" in text or "invalid password" in text:
        return f"the password (or user) in {key} is wrong: check it against the Redis ACL"
    if "refused" in text or "error 111" in text or "connect call failed" in text:
        return f"nothing listens there: start redis-server, or correct the host and port in {key}"
    if "did not answer" in text or "timeout" in text or "timed out" in text:
        return f"no answer: check {key}'s host and the firewall between this machine and Redis"
    return f"check {key} (host, port, password, TLS: rediss://)"
