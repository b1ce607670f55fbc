"""Hide credentials in URIs and in any text (logs, ffmpeg stderr) that may echo them."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# scheme://userinfo@ ; userinfo may itself contain '@' (greedy up to the last '@' before the host part).
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s'\"?#]*)@")
_SECRET_QUERY_RE = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pass|pwd|token|auth|key|secret|access_token)=)(?P<value>[^&;#\s'\"]*)",
    re.IGNORECASE,
)


def redact_uri(uri: str | int) -> str:
    """`rtsp://user:pass@host/x` -> `rtsp://***@host/x`; secret query values (`?password=..`) -> `***`.

    Non-URI values (paths, device indexes) come back unchanged (as str).
    """
    text = str(uri)
    text = _USERINFO_RE.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _SECRET_QUERY_RE.sub(lambda m: f"{m.group('key')}***", text)


def uri_secrets(uri: str | int) -> list[str]:
    """The raw credential strings of `uri` (user info, password, secret query values), longest first."""
    text = str(uri)
    secrets: set[str] = set()
    match = _USERINFO_RE.search(text)
    if match and match.group("userinfo"):
        info = match.group("userinfo")
        secrets.add(info)
        user, _, password = info.partition(":")
        for part in (user, password):
            if part:
                secrets.update({part, unquote(part)})
    for m in _SECRET_QUERY_RE.finditer(text):
        if m.group("value"):
            secrets.update({m.group("value"), unquote(m.group("value"))})
    try:  # what urllib decodes (percent-escapes) as well
        parts = urlsplit(text)
        for part in (parts.username, parts.password):
            if part:
                secrets.add(part)
    except ValueError:
        pass
    # very short parts ("a") would mangle ordinary words; they only show up inside the URI, redacted above
    return sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True)


def redact_text(text: str, uri: str | int | None = None) -> str:
    """Redact every URI in `text` and, when `uri` is given, any raw occurrence of its credentials."""
    out = redact_uri(text)
    if uri is not None:
        for secret in uri_secrets(uri):
            out = out.replace(secret, "***")
    return out
