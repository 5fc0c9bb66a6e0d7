"""One JSON POST to an alert endpoint (a Slack incoming webhook or any JSON webhook).

The URL is a credential (a Slack webhook URL carries its token), so no message here ever names it:
a failure says what answered (an HTTP status) or what failed (refused, timed out), nothing more.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request

from .errors import GpuplatError

# Short: a sensor tick has 60 s for every environment, and the next tick retries anyway.
TIMEOUT_S = 5.0


class WebhookFailed(GpuplatError):
    """The alert endpoint refused the message or did not answer."""


def post_json(url: str, payload: dict, timeout: float = TIMEOUT_S) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or any(c.isspace() or ord(c) < 32 for c in url):
        raise WebhookFailed("the alert URL in the secret is not one http(s) URL",
                            "put the webhook's full https:// URL, alone, in the secret named by substrate.alerts.url_secret")
    req = urllib.request.Request(url, method="POST", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json", "User-Agent": "gpuplat"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"the alert endpoint answered HTTP {exc.code}",
                            "check the webhook still exists (Slack answers 404 or 410 for a removed one)") from None
    except Exception as exc:  # refused, timed out, a broken answer: only the kind, since messages may carry the URL
        reason = getattr(exc, "reason", exc)
        kind = "timed out" if isinstance(reason, (socket.timeout, TimeoutError)) else type(reason).__name__
        raise WebhookFailed(f"the alert endpoint could not be reached ({kind})",
                            "it is retried on the next tick") from None
