"""One JSON POST to an alert endpoint (a Slack incoming webhook or any JSON webhook).

The URL is a credential (a Slack webhook URL carries its token), so no message here ever names it:
a failure says what answered (an HTTP status) or what failed (refused, timed out), nothing more.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from .errors import GpuplatError

TIMEOUT_S = 10.0


class WebhookFailed(GpuplatError):
    """The alert endpoint refused the message or did not answer."""


def post_json(url: str, payload: dict, timeout: float = TIMEOUT_S) -> None:
    if not url.startswith(("https://", "http://")):
        raise WebhookFailed("the alert URL in the secret is not an http(s) URL",
                            "put the webhook's full https:// URL in the secret named by substrate.alerts.url_secret")
    req = urllib.request.Request(url, method="POST", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json", "User-Agent": "gpuplat"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"the alert endpoint answered HTTP {exc.code}",
                            "check the webhook still exists (Slack answers 404 or 410 for a removed one)") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        kind = "timed out" if isinstance(reason, (socket.timeout, TimeoutError)) else type(reason).__name__
        raise WebhookFailed(f"the alert endpoint could not be reached ({kind})",
                            "it is retried on the next tick") from None
