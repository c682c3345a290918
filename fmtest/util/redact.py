"""Credentials never leave the process: a URL loses its user name and password before it is shown or stored.

API keys set as options are hidden by name (`api_key`, `token`...); a password can also ride inside
a URL (`http://user:PASS@host/v1`, the usual way to reach a gateway with basic auth). Everything
that writes a URL or an error message that may quote one (errors, Prediction.error, model ids,
the request record, results, reports) passes it through `redact` first.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

REDACTED = "<redacted>"
# scheme://userinfo@ : the userinfo runs to the last '@' before the host's '/', '?', '#' or a space,
# so a password holding an unescaped '@' is hidden whole.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]+@")


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced: http://u:p@host/v1 -> http://<redacted>@host/v1."""
    if "://" not in text:  # the common case, and every image's base64 thumbnail: no URL at all
        return text
    return _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def redact_values(value: object) -> object:
    """`redact` applied to every string inside data: dataclasses (a copy, each field redacted), dicts, lists,
    tuples; other values as they are. Results pass through it before any output is written."""
    if isinstance(value, str):
        return redact(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: redact_values(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, Mapping):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_values(v) for v in value)
    return value


SECRET_WORDS = ("key", "token", "secret", "password")


def redact_option(name: str, value: object) -> object:
    """An option as it may be shown: hidden whole when its name says it is a secret (`api_key`), else
    with every URL's credentials removed."""
    if value is not None and any(word in name.lower() for word in SECRET_WORDS):
        return REDACTED
    return redact_values(value)
