"""Alerts: a finding that needs a person reaches them without the UI.

What is sent (each by the code that finds it): a GPU node idle past its grace period, with its blockers
and what it costs per hour (the scale-to-zero guard); drift in `remediation: report` mode, a change
waiting for approval with the exact command, a difference no run can fix (the drift sensor); a pause
that left something billing (the `paused_costs_nothing` check). Only to environments whose config has
`substrate.alerts`: a Slack incoming webhook or a generic JSON webhook, whose URL is read from the
environment's Secret Manager when there is something to send, never kept.

One finding is one message. Its key names the episode (the environment, what, and since when), and
the instance's key-value store (the same on SQLite and PostgreSQL, shared by the sensors and runs)
holds when it was last sent: a tick that sees it again sends nothing until the quiet period
(`resend_after_minutes`) has passed; the same problem back after it cleared is a new episode. A
delivery that fails is retried a few times, logged (names only, never the URL), and left unsent, so the
next tick tries again; it never fails the sensor or the run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from resources.errors import GpuplatError
from resources.webhook import WebhookFailed, post_json

from .config import EnvConfig

KV_PREFIX = "gpuplat/alert/"
ATTEMPTS = 2
BACKOFF_S = 0.5
# What one call may spend sending: the rest waits for the next tick (a sensor's tick has 60 s in all).
BUDGET_S = 15.0


@dataclass(frozen=True)
class Alert:
    env: str
    key: str  # one episode of one finding
    kind: str  # idle-gpu | drift | approval | cannot-fix | pause-billing
    title: str
    text: str
    command: str = ""

    def payload(self, kind: str) -> dict:
        if kind == "slack":  # https://api.slack.com/messaging/webhooks: a JSON body with `text`
            lines = [f"*gpuplat · {self.env}*: {self.title}", self.text]
            if self.command:
                lines.append(f"`{self.command}`")
            return {"text": "\n".join(lines)}
        return {"source": "gpuplat", "environment": self.env, "finding": self.kind, "key": self.key,
                "title": self.title, "text": self.text, "command": self.command}


def _sent_at(raw: str | None) -> float | None:
    try:
        return float(json.loads(raw)["sent"]) if raw else None
    except (ValueError, KeyError, TypeError):
        return None


def read_url_with(connect: Callable[[EnvConfig], object]) -> Callable[[EnvConfig], str]:
    """How a sensor or run reads an environment's webhook URL: the latest version of its secret, through
    that environment's Google connection (`connect(env).google`)."""
    def read(env: EnvConfig) -> str:
        secret = env.substrate.alerts.url_secret
        value = connect(env).google.access_secret(secret)
        if not value:
            raise WebhookFailed(f"the alert secret {secret} has no version",
                                f"printf '%s' \"$WEBHOOK_URL\" | gcloud secrets versions add {secret} "
                                f"--project {env.cluster.projectID} --data-file=-")
        try:
            return value.decode().strip()
        except UnicodeDecodeError:
            raise WebhookFailed(f"the alert secret {secret} is not text", "store the webhook URL itself") from None
    return read


def deliver(instance, envs: dict[str, EnvConfig], alerts: list[Alert], now: float,
            read_url: Callable[[EnvConfig], str], log, post=post_json, sleep=time.sleep) -> dict[str, int]:
    """Send each alert of an environment with a notifier that was never sent or not within its quiet period.
    Never raises for the endpoint or the secret: the alert stays unsent and the next call tries again."""
    wanted = [a for a in alerts if a.env in envs and envs[a.env].substrate.alerts is not None]
    counts = {"sent": 0, "quiet": 0, "failed": 0}
    if not wanted:
        return counts
    last = instance.run_storage.get_cursor_values({KV_PREFIX + a.key for a in wanted})
    urls: dict[str, str] = {}
    down: set[str] = set()  # environments or URLs that failed in this call: not tried again until the next
    deadline = time.monotonic() + BUDGET_S
    for a in wanted:
        cfg = envs[a.env].substrate.alerts
        sent = _sent_at(last.get(KV_PREFIX + a.key))
        if sent is not None and now - sent < cfg.resend_after_minutes * 60:
            counts["quiet"] += 1
            continue
        if a.env in down or time.monotonic() > deadline:
            counts["failed"] += 1
            continue
        try:
            if a.env not in urls:
                urls[a.env] = read_url(envs[a.env])
            if urls[a.env] in down:  # another environment's alert just failed on this endpoint
                counts["failed"] += 1
                continue
            for attempt in range(ATTEMPTS):
                try:
                    post(urls[a.env], a.payload(cfg.kind))
                    break
                except WebhookFailed:
                    if attempt == ATTEMPTS - 1:
                        raise
                    sleep(BACKOFF_S * 2 ** attempt)
        except GpuplatError as exc:
            down.update({a.env, urls.get(a.env, a.env)})
            counts["failed"] += 1
            log.warning(f"[{a.env}] alert '{a.title}' not delivered after {ATTEMPTS} attempt(s), tried again "
                        f"next time: {exc.line()}")
            continue
        instance.run_storage.set_cursor_values({KV_PREFIX + a.key: json.dumps({"sent": now})})
        counts["sent"] += 1
        log.info(f"[{a.env}] alert sent: {a.title}")
    return counts
