"""Alerts reach a local HTTP receiver: one message per finding, the resend after the quiet period, a
failed delivery retried on the next tick, no secret value in any message.

The receiver is a plain `http.server` on loopback standing in for a Slack incoming webhook (a POST of
JSON with `text`, https://api.slack.com/messaging/webhooks) or a generic JSON webhook; its URL lives in
the sandbox's Secret Manager, where the environment's config names it, as it would in a real project.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.cloud import secretmanager_v1

from sensors.drift import build_drift_sensor
from substrate.alerts import ATTEMPTS
from substrate.secrets_seeded import desired_secrets
from tests.conftest import client_options

from .conftest import Ticker
from .test_drift_sensor import delete_gpu_pool, drift_gpu_pool_min
from .test_scale_to_zero import Pool

SECRET = "gpuplat-alerts-webhook"


class Receiver:
    """Records each POST; answers 500 to the next `fail` of them."""

    def __init__(self):
        self.messages: list[dict] = []
        self.attempts = 0
        self.fail = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                if receiver.fail:
                    receiver.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.messages.append({"path": self.path, "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A token in the path, as a Slack webhook URL has one: it must never show up anywhere.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/tok3n-in-the-url"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def warnings_logged(capfd) -> list[str]:
    """The WARNING lines the sensors logged so far (Dagster's console log, read at the file descriptors)."""
    out, err = capfd.readouterr()
    return [line for line in (out + err).splitlines() if " - WARNING - " in line]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def store_url(gp, url: str) -> None:
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.sandbox, "secretmanager"))
    parent = "projects/gpuplat-test"
    try:
        sm.create_secret(parent=parent, secret_id=SECRET, secret={"replication": {"automatic": {}}})
    except Exception as exc:  # already there from an earlier store in this test
        assert "exists" in str(exc).lower(), exc
    sm.add_secret_version(parent=f"{parent}/secrets/{SECRET}", payload={"data": url.encode()})


def secret_values(gp) -> list[str]:
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.sandbox, "secretmanager"))
    spec = desired_secrets(gp.env())
    names = spec.internal_names
    assert names
    return [sm.access_secret_version(name=f"projects/gpuplat-test/secrets/{n}/versions/latest").payload.data.decode()
            for n in names]


class Clock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def alerting(gp, kind: str = "slack", **substrate) -> None:
    gp.configure(substrate={"remediation": "report", "alerts": {"kind": kind, "url_secret": SECRET,
                                                                "resend_after_minutes": 60}, **substrate})


def test_reported_drift_is_sent_once_then_again_after_the_quiet_period_and_never_carries_a_secret(gp, receiver):
    alerting(gp)
    assert gp.materialize().success
    store_url(gp, receiver.url)
    clock = Clock()
    ticker = Ticker(build_drift_sensor(clock=clock), gp, daemon=True)
    ticker.tick()
    assert receiver.messages == []  # in sync: nothing to say
    drift_gpu_pool_min(gp)
    ticker.tick()
    [message] = receiver.messages
    text = message["body"]["text"]
    assert message["path"] == "/services/T000/B000/tok3n-in-the-url"
    assert text.startswith("*gpuplat · sandbox*: drift in gpu_pool (remediation: report)"), text
    assert "autoscaling" in text
    for _ in range(3):  # the same finding, ticks later: nothing more
        clock.now += 60
        ticker.tick()
    assert len(receiver.messages) == 1
    clock.now += 60 * 60  # past the quiet period, still open: sent again
    ticker.tick()
    assert len(receiver.messages) == 2 and receiver.messages[1]["body"] == message["body"]

    assert gp.materialize(select=["gpu_pool"]).success  # a person fixes it: the finding closes
    ticker.tick()
    drift_gpu_pool_min(gp)  # and the same drift again is a new finding: sent at once
    clock.now += 60
    ticker.tick()
    assert len(receiver.messages) == 3
    sent = json.dumps(receiver.messages)
    for value in [*secret_values(gp), receiver.url, "tok3n-in-the-url"]:
        assert value not in sent.replace(message["path"], "")


def test_a_failed_delivery_is_logged_and_retried_on_the_next_tick_without_failing_the_sensor(gp, receiver, capfd):
    alerting(gp, kind="webhook")
    assert gp.materialize().success
    store_url(gp, receiver.url)
    clock = Clock()
    ticker = Ticker(build_drift_sensor(clock=clock), gp, daemon=True)
    ticker.tick()
    drift_gpu_pool_min(gp)
    receiver.fail = ATTEMPTS  # every attempt of this tick
    failed = ticker.tick()
    assert receiver.attempts == ATTEMPTS and receiver.messages == []
    assert failed.run_requests  # the tick itself went on: its report run was requested
    logged = [m for m in warnings_logged(capfd) if "not delivered" in m]
    assert logged and "the alert endpoint answered HTTP 500" in logged[0]
    assert receiver.url not in " ".join(logged) and "tok3n" not in " ".join(logged)
    clock.now += 60
    ticker.tick()
    [message] = receiver.messages
    body = message["body"]
    assert (body["source"], body["environment"], body["finding"]) == ("gpuplat", "sandbox", "drift")
    assert body["key"].startswith("sandbox:gpu_pool:drift:")
    clock.now += 60
    ticker.tick()
    assert len(receiver.messages) == 1


def test_a_change_waiting_for_approval_is_sent_with_the_exact_command(gp, receiver):
    alerting(gp, require_approval=True)
    assert gp.materialize(tags={"gpuplat/approve": "true"}).success
    store_url(gp, receiver.url)
    ticker = Ticker(build_drift_sensor(clock=Clock()), gp, daemon=True)
    ticker.tick()
    delete_gpu_pool(gp)
    ticker.tick()
    texts = [m["body"]["text"] for m in receiver.messages]
    [approval] = [t for t in texts if "gpu_pool waits for approval" in t]
    assert approval.endswith("`GPUPLAT_AUTO_APPROVE=1 dagster asset materialize -m gpuplat_assets --select gpu_pool "
                             "--partition sandbox`"), approval


def test_an_environment_without_a_notifier_sends_nothing_and_a_missing_url_is_one_line(gp, receiver, capfd):
    gp.configure(substrate={"remediation": "report"})
    assert gp.materialize().success
    ticker = Ticker(build_drift_sensor(clock=Clock()), gp, daemon=True)
    ticker.tick()
    drift_gpu_pool_min(gp)
    ticker.tick()
    assert receiver.attempts == 0
    alerting(gp)  # a notifier whose secret holds no URL yet
    assert gp.materialize(select=["gpu_pool"]).success
    ticker.tick()
    drift_gpu_pool_min(gp)
    ticker.tick()
    [logged] = [m for m in warnings_logged(capfd) if "not delivered" in m]
    assert f"the alert secret {SECRET} has no version" in logged and f"gcloud secrets versions add {SECRET}" in logged
    assert receiver.attempts == 0


def test_alerts_need_the_url_in_secret_manager_never_in_the_file(gp):
    from substrate.config import ConfigError
    from substrate.environments import load_environment

    gp.configure(secret_backend="vault", substrate={"alerts": {"url_secret": SECRET}})
    with pytest.raises(ConfigError, match="alerts read their URL from Secret Manager"):
        load_environment("sandbox", gp.platform.envs)
    gp.configure(substrate={"alerts": {"url": "https://hooks.slack.com/services/T/B/x"}})
    with pytest.raises(ConfigError, match="substrate.alerts.url"):
        load_environment("sandbox", gp.platform.envs)


def test_a_gpu_node_burning_money_is_sent_once_with_its_blocker_and_price(gp, receiver):
    gp.configure(substrate={"alerts": {"kind": "slack", "url_secret": SECRET}})
    pool = Pool(gp)
    store_url(gp, receiver.url)
    node = pool.idle_gpu_node()
    made = pool.block(node, "bare-pod")
    pool.ticker.tick()
    pool.advance(25)
    pool.ticker.tick()
    pool.ticker.tick()
    [message] = receiver.messages
    text = message["body"]["text"]
    assert f"GPU node(s) idle past the grace period, still billed: {node}" in text
    assert f"{made['namespace']}/{made['pod']} (NotReplicated)" in text, text
    assert "1 idle GPU node(s) x 0.71 USD/h = 0.71 USD/h" in text, text
