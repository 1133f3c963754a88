"""The foreign-error boundary: aiohttp exceptions → error tree; redaction."""

from __future__ import annotations

import aiohttp
import pytest

from service.errors import ParseError, RequestRejected, ServerError, TransportError
from service.http.translate import body_excerpt, redact_url, status_error, translate_error


def test_redact_url_masks_secrets_and_userinfo() -> None:
    url = "https://bob:hunter2@api.example.com/v1/items?api_key=SECRET&page=2&access_token=T0K"
    safe = redact_url(url)
    assert "SECRET" not in safe
    assert "T0K" not in safe
    assert "hunter2" not in safe
    assert "page=2" in safe
    assert "api.example.com/v1/items" in safe


def test_body_excerpt_short_single_line_and_masked() -> None:
    body = b'{"error":  "bad\n request",\n "password": "hunter2", "detail": "' + b"x" * 500 + b'"}'
    text = body_excerpt(body, limit=80)
    assert "\n" not in text
    assert len(text) <= 80
    assert "hunter2" not in text
    assert body_excerpt(b"\xff\xfe bad bytes")  # never raises on undecodable input


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (aiohttp.ClientPayloadError("Response payload is not completed"), TransportError),
        (aiohttp.ServerDisconnectedError(), TransportError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), TransportError),
        (TimeoutError(), TransportError),
        (ConnectionResetError(), TransportError),
        (aiohttp.InvalidURL("http://[bad"), ParseError),
    ],
)
def test_translate_error(exc: BaseException, cls: type) -> None:
    err = translate_error(exc, vendor="acme", url="https://h/x?token=abc")
    assert type(err) is cls
    assert err.vendor == "acme"
    assert err.url is not None
    assert "abc" not in err.url
    assert "abc" not in str(err)


def test_status_error_carries_status_and_excerpt() -> None:
    err = status_error(404, method="GET", vendor="acme", url="https://h/x", body=b"no such item")
    assert isinstance(err, RequestRejected)
    assert err.status == 404
    assert err.body == "no such item"
    assert "no such item" in str(err)
    assert "[acme]" in str(err)
    assert isinstance(status_error(503, method="GET", vendor="a", url="u"), ServerError)
