"""HTTP layer: one aiohttp session, per-vendor limits, auth hooks, retries, metrics."""

from service.http.auth import ApiKeyAuth, Auth, BasicAuth, BearerLogin, Token
from service.http.client import HttpClient
from service.http.limiter import Grant, VendorLimiter
from service.http.metrics import HttpMetrics, RequestStats, RequestTally, request_scope
from service.http.response import Response, StreamContent, StreamResponse
from service.http.retry import (
    RetryPolicy,
    backoff_s,
    classify_status,
    parse_retry_after,
    should_retry,
)
from service.http.translate import body_excerpt, redact_url, translate_error
from service.http.vendor_client import VendorClient

__all__ = [
    "ApiKeyAuth",
    "Auth",
    "BasicAuth",
    "BearerLogin",
    "Grant",
    "HttpClient",
    "HttpMetrics",
    "RequestStats",
    "RequestTally",
    "Response",
    "RetryPolicy",
    "StreamContent",
    "StreamResponse",
    "Token",
    "VendorClient",
    "VendorLimiter",
    "backoff_s",
    "body_excerpt",
    "classify_status",
    "parse_retry_after",
    "redact_url",
    "request_scope",
    "should_retry",
    "translate_error",
]
