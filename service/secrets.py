"""The one secret redaction: ``redact_text`` for any text vendorsync prints or logs, built
on ``mask_url``, which every URL passes through.

Kept apart from ``service.config`` (which re-exports it) so logging and error
translation can share it without pulling in the settings models' size.
"""

from __future__ import annotations

import re

MASK = "***"

# A URL runs from its scheme to the next whitespace. Passwords may hold any other
# character (``@``, ``/``, ``?``, quotes), so the user-info ends at the *last* ``@`` that is
# followed by something shaped like a host. When a later ``@`` is not a password's
# (``http://h:1/x?mail=a@b.com``) we hide too much, never too little.
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(\S+)")
_HOST = re.compile(r"(?:\[[^\]/]*\]|[^/?#@:&=;,\[\]]*)(?::\d*)?(?:[/?#]|$)")
# Query parameters whose value is a secret (``?password=``, ``&api_key=``, ``sslpassword=``).
SECRET_PARAM = re.compile(
    r"(?i)([?&;][\w.-]*(?:password|passwd|pwd|token|secret|api_?key)[\w.-]*=)[^&;#\s]*"
)


def _mask_one(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    at = rest.rfind("@")
    while at > 0 and not _HOST.match(rest, at + 1):
        at = rest.rfind("@", 0, at)
    if at > 0 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:{MASK}{rest[at:]}"
    return scheme + SECRET_PARAM.sub(lambda m: m.group(1) + MASK, rest)


def mask_url(text: str) -> str:
    """Mask the password and secret query parameters of every URL inside ``text``.

    ``postgresql://u:p@ss@h/db?password=x`` → ``postgresql://u:***@h/db?password=***``; the
    user name, host, path and other parameters stay readable. Any scheme is handled.
    """
    return _URL.sub(_mask_one, text)


# ``password=…`` in query strings and forms, ``"password": "…"`` in JSON text.
SECRET_IN_TEXT = re.compile(
    r"(?i)((?:password|passwd|pwd|secret|client_secret|token|access_token|api_?key|"
    r"credential)=)[^\s&\"',}]+"
    r"|(\"(?:password|passwd|[a-z_]*secret|[a-z_]*token|api_?key|credentials?)\"\s*:\s*\")"
    r"[^\"]*"
)


def redact_text(text: str) -> str:
    """Mask ``key=value`` and JSON ``"key": "value"`` secrets and URL passwords in text."""
    masked = SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + MASK, text)
    return mask_url(masked)
