"""URL credentials are hidden wherever a URL is shown or stored."""

from __future__ import annotations

import pytest

from fmtest.util.redact import redact, redact_values


@pytest.mark.parametrize("text, shown", [
    ("http://user:PASS@host:8000/v1", "http://<redacted>@host:8000/v1"),
    ("https://token@gw.example/v1beta?x=1", "https://<redacted>@gw.example/v1beta?x=1"),
    ("http://u:p@ss@host/v1", "http://<redacted>@host/v1"),  # an unescaped '@' in the password
    ("HTTP 503 from http://u:pw@h/v1: fake, then http://a:b@c/d",
     "HTTP 503 from http://<redacted>@h/v1: fake, then http://<redacted>@c/d"),
    ("http://host:8000/v1", "http://host:8000/v1"),
    ("http://host/v1 mail ops@example.com", "http://host/v1 mail ops@example.com"),
])
def test_redact_hides_userinfo_and_nothing_else(text, shown):
    assert redact(text) == shown


def test_redact_values_walks_json_like_data():
    config = {"openai_vlm": {"base_url": "http://u:pw@h/v1", "concurrency": 4, "urls": ["http://x:y@h", 3]}}
    assert redact_values(config) == {"openai_vlm": {"base_url": "http://<redacted>@h/v1", "concurrency": 4,
                                                    "urls": ["http://<redacted>@h", 3]}}
