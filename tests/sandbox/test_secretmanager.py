"""The sandbox's Secret Manager, through the official secretmanager_v1 REST client."""

from __future__ import annotations

import json
import urllib.request

import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager_v1

from sandbox.apis.secretmanager import crc32c
from sandbox.stores import secrets as secretmanager

PROJECT = "projects/gpuplat-test"
AUTOMATIC = secretmanager_v1.Replication(automatic=secretmanager_v1.Replication.Automatic())


def sm_client(sandbox) -> secretmanager_v1.SecretManagerServiceClient:
    return secretmanager_v1.SecretManagerServiceClient(
        transport="rest", credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=sandbox.urls()["secretmanager"]))


@pytest.fixture
def sm(sandbox):
    return sm_client(sandbox)


def create(sm, secret_id: str, parent: str = PROJECT) -> secretmanager_v1.Secret:
    return sm.create_secret(parent=parent, secret_id=secret_id,
                            secret=secretmanager_v1.Secret(replication=AUTOMATIC, labels={"owner": "gpuplat"}))


def add(sm, secret: str, data: bytes, crc: int | None = None) -> secretmanager_v1.SecretVersion:
    payload = secretmanager_v1.SecretPayload(data=data)
    if crc is not None:
        payload.data_crc32c = crc
    return sm.add_secret_version(parent=secret, payload=payload)


def test_a_secret_is_created_read_and_named_with_the_project_number(sm):
    secret = create(sm, "dex-admin")
    project, number, _, sid = secret.name.split("/")
    assert project == "projects" and number.isdigit() and sid == "dex-admin"
    assert "automatic" in secretmanager_v1.Replication.to_dict(secret.replication)
    assert secret.create_time
    assert sm.get_secret(name=f"{PROJECT}/secrets/dex-admin").name == secret.name
    assert sm.get_secret(name=secret.name).labels == {"owner": "gpuplat"}


def test_creating_a_secret_twice_is_a_conflict(sm):
    create(sm, "dup")
    with pytest.raises(exceptions.Conflict, match="already exists"):
        create(sm, "dup")


def test_a_missing_secret_is_not_found(sm):
    with pytest.raises(exceptions.NotFound):
        sm.get_secret(name=f"{PROJECT}/secrets/missing")
    with pytest.raises(exceptions.NotFound, match="not found or has no versions"):
        sm.access_secret_version(name=f"{PROJECT}/secrets/missing/versions/latest")


def test_a_secret_needs_a_valid_id_and_a_replication_policy(sm):
    with pytest.raises(exceptions.BadRequest):
        create(sm, "bad id!")
    with pytest.raises(exceptions.BadRequest, match="replication"):
        sm.create_secret(parent=PROJECT, secret_id="norepl", secret=secretmanager_v1.Secret())


def test_versions_are_added_and_accessed_latest_and_by_number(sm):
    secret = create(sm, "token")
    v1 = add(sm, secret.name, b"first", crc=crc32c(b"first"))
    assert v1.name == f"{secret.name}/versions/1"
    assert v1.state == secretmanager_v1.SecretVersion.State.ENABLED
    assert v1.client_specified_payload_checksum
    add(sm, secret.name, b"second")
    latest = sm.access_secret_version(name=f"{PROJECT}/secrets/token/versions/latest")
    assert latest.name == f"{secret.name}/versions/2"
    assert latest.payload.data == b"second"
    assert latest.payload.data_crc32c == crc32c(b"second")
    assert sm.access_secret_version(name=f"{secret.name}/versions/1").payload.data == b"first"
    with pytest.raises(exceptions.NotFound):
        sm.access_secret_version(name=f"{secret.name}/versions/9")


def test_a_payload_whose_checksum_does_not_match_is_a_bad_request(sm):
    secret = create(sm, "crc")
    with pytest.raises(exceptions.BadRequest, match="Checksum mismatch"):
        add(sm, secret.name, b"payload", crc=crc32c(b"payload") ^ 1)
    assert list(sm.list_secret_versions(parent=secret.name)) == []


def test_the_latest_version_of_a_secret_without_versions_is_not_found(sm):
    create(sm, "empty")
    with pytest.raises(exceptions.NotFound, match="has no versions"):
        sm.access_secret_version(name=f"{PROJECT}/secrets/empty/versions/latest")


def test_versions_are_listed_newest_first(sm):
    secret = create(sm, "many")
    for i in range(3):
        add(sm, secret.name, f"v{i}".encode())
    assert [v.name.rsplit("/", 1)[-1] for v in sm.list_secret_versions(parent=secret.name)] == ["3", "2", "1"]


def test_secrets_are_listed_in_pages(sm):
    for i in range(5):
        create(sm, f"s{i}")
    pager = sm.list_secrets(request={"parent": PROJECT, "page_size": 2})
    pages = list(pager.pages)
    assert [len(p.secrets) for p in pages] == [2, 2, 1]
    assert pages[0].total_size == 5
    assert sorted(s.name.rsplit("/", 1)[-1] for p in pages for s in p.secrets) == [f"s{i}" for i in range(5)]


def test_secrets_of_another_project_are_not_listed(sm):
    create(sm, "mine")
    create(sm, "theirs", parent="projects/other-project")
    assert [s.name.rsplit("/", 1)[-1] for s in sm.list_secrets(parent=PROJECT)] == ["mine"]


def test_plain_json_gets_state_names_and_the_rest_client_gets_integers(sandbox, sm):
    secret = create(sm, "enum")
    add(sm, secret.name, b"x")
    base = sandbox.urls()["secretmanager"] + f"/v1/{PROJECT}/secrets/enum/versions/1"
    with urllib.request.urlopen(base) as resp:
        assert json.loads(resp.read())["state"] == "ENABLED"
    with urllib.request.urlopen(base + "?$alt=json;enum-encoding=int") as resp:
        assert json.loads(resp.read())["state"] == 1


def test_access_latest_gives_the_simulated_eso_the_payload(sandbox, sm):
    secret = create(sm, "for-eso")
    add(sm, secret.name, b"one")
    add(sm, secret.name, b"two")
    with sandbox.store.lock:
        assert secretmanager.access_latest(sandbox, "gpuplat-test", "for-eso") == b"two"
        assert secretmanager.access_latest(sandbox, "gpuplat-test", "absent") is None
        assert secretmanager.secret_ids(sandbox, "gpuplat-test") == ["for-eso"]


def test_crc32c_matches_the_published_check_value():
    assert crc32c(b"123456789") == 0xE3069283
