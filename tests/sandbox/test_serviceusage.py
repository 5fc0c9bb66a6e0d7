"""The sandbox's Service Usage API, through the official service_usage_v1 REST client."""

from __future__ import annotations

import re

import json
import urllib.error
import urllib.request

import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import service_usage_v1

from sandbox.stores import projects as serviceusage
from tests.conftest import admin

PROJECT = "projects/gpuplat-test"
State = service_usage_v1.State


def su_client(sandbox) -> service_usage_v1.ServiceUsageClient:
    return service_usage_v1.ServiceUsageClient(
        transport="rest", credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=sandbox.urls()["serviceusage"]))





def raw_get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def su(sandbox):
    return su_client(sandbox)


def batch_enable(su, parent: str, service_ids: list[str]):
    return su.batch_enable_services(request={"parent": parent, "service_ids": service_ids})


def enabled(su, parent=PROJECT) -> set[str]:
    return {s.config.name for s in su.list_services(request={"parent": parent, "filter": "state:ENABLED"})}


def test_a_new_project_has_service_usage_and_resource_manager_enabled(su):
    assert enabled(su) == {"serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com"}


def test_batch_enable_is_an_operation_whose_result_lists_the_enabled_services(su):
    op = batch_enable(su, PROJECT, ["container.googleapis.com",
                                                                "secretmanager.googleapis.com"])
    assert op.operation.name.startswith("operations/acat.p2-")
    assert not op.operation.done
    result = op.result(timeout=10)
    assert sorted(s.config.name for s in result.services) == ["container.googleapis.com",
                                                             "secretmanager.googleapis.com"]
    assert all(s.state == State.ENABLED for s in result.services)
    assert op.metadata.resource_names == ["container.googleapis.com", "secretmanager.googleapis.com"]
    assert {"container.googleapis.com", "secretmanager.googleapis.com"} <= enabled(su)


def test_enabling_a_service_also_enables_what_it_depends_on(su):
    su.enable_service(request={"name": f"{PROJECT}/services/container.googleapis.com"}).result(timeout=10)
    assert "compute.googleapis.com" in enabled(su)


def test_the_change_lands_only_when_the_operation_is_done(sandbox, su):
    batch_enable(su, PROJECT, ["dns.googleapis.com"])
    assert "dns.googleapis.com" not in enabled(su)
    admin(sandbox, "POST", "/sandbox/clock/advance", {"seconds": 6})
    assert "dns.googleapis.com" in enabled(su)


def test_enabling_services_already_enabled_answers_a_done_noop_operation(su):
    op = batch_enable(su, PROJECT, ["serviceusage.googleapis.com"])
    assert op.operation.name == "operations/noop.DONE_OPERATION"
    assert op.done()
    assert [s.config.name for s in op.result().services] == ["serviceusage.googleapis.com"]


def test_more_than_twenty_services_in_one_batch_is_a_bad_request(su):
    ids = [f"svc{i}.googleapis.com" for i in range(21)]
    with pytest.raises(exceptions.BadRequest, match="maximum of 20"):
        batch_enable(su, PROJECT, ids)


def test_an_unknown_service_is_permission_denied_as_google_answers_it(su):
    with pytest.raises(exceptions.Forbidden, match="Not found or permission denied"):
        batch_enable(su, PROJECT, ["not-a-service"])


def test_listing_enabled_services_pages(su):
    batch_enable(su, PROJECT, [
        "container.googleapis.com", "secretmanager.googleapis.com", "iam.googleapis.com"]).result(timeout=10)
    pager = su.list_services(request={"parent": PROJECT, "filter": "state:ENABLED", "page_size": 2})
    pages = list(pager.pages)
    assert len(pages) > 1 and all(len(p.services) <= 2 for p in pages)
    names = [s.config.name for p in pages for s in p.services]
    assert len(names) == len(set(names)) and "iam.googleapis.com" in names


def test_get_service_reports_its_state_and_uses_the_project_number(su):
    svc = su.get_service(request={"name": f"{PROJECT}/services/container.googleapis.com"})
    assert svc.state == State.DISABLED
    assert svc.config.title == "Kubernetes Engine API"
    assert svc.name.split("/")[1].isdigit()
    assert svc.name == f"{svc.parent}/services/container.googleapis.com"
    # the number reaches the same project
    same = su.get_service(request={"name": f"{svc.parent}/services/serviceusage.googleapis.com"})
    assert same.state == State.ENABLED


def test_plain_json_gets_state_names_and_the_rest_client_gets_integers(sandbox):
    base = sandbox.urls()["serviceusage"] + f"/v1/{PROJECT}/services/serviceusage.googleapis.com"
    assert raw_get(base)[1]["state"] == "ENABLED"
    assert raw_get(base + "?$alt=json;enum-encoding=int")[1]["state"] == 2


def test_a_project_without_service_usage_answers_service_disabled(sandbox, su):
    admin(sandbox, "POST", "/sandbox/projects", {"project": "locked", "enabled": []})
    with pytest.raises(exceptions.Forbidden) as info:
        su.list_services(request={"parent": "projects/locked", "filter": "state:ENABLED"})
    err = info.value
    # Real errors name the project by number, as the sandbox numbers its projects (issue 20 item 2).
    assert re.search(r"Service Usage API has not been used in project \d+ before or it is disabled", err.message)
    assert err.reason == "SERVICE_DISABLED"
    assert err.domain == "googleapis.com"
    assert err.metadata["service"] == "serviceusage.googleapis.com"
    with pytest.raises(exceptions.Forbidden):
        batch_enable(su, "projects/locked", ["serviceusage.googleapis.com"])


def test_the_admin_api_sets_a_project_s_enabled_services_exactly(sandbox, su):
    admin(sandbox, "POST", "/sandbox/projects", {"project": "exact", "enabled": [
        "serviceusage.googleapis.com", "container.googleapis.com"]})
    assert enabled(su, "projects/exact") == {"serviceusage.googleapis.com", "container.googleapis.com"}
    with sandbox.store.lock:
        assert serviceusage.is_enabled(sandbox, "exact", "container.googleapis.com")
        assert not serviceusage.is_enabled(sandbox, "exact", "compute.googleapis.com")


def test_an_invalid_filter_is_a_bad_request(su):
    with pytest.raises(exceptions.BadRequest):
        list(su.list_services(request={"parent": PROJECT, "filter": "name:foo"}))


# ---- what a real project refuses ----------------------------------------------------------------------------------
def test_every_api_answers_service_disabled_until_its_service_is_enabled(sandbox, su):
    """Every Google API, not only Service Usage, answers a project that has not enabled it with 403
    PERMISSION_DENIED, ErrorInfo reason SERVICE_DISABLED and metadata.service (google-gemini/gemini-cli#1343
    shows the body; api-core maps it to Forbidden with .reason and .metadata)."""
    from google.cloud import billing_v1, compute_v1, container_v1, secretmanager_v1

    from tests.conftest import client_options

    urls = sandbox.urls()
    calls = {
        "container.googleapis.com": lambda: container_v1.ClusterManagerClient(**client_options(urls, "container"))
        .list_clusters(parent="projects/gpuplat-test/locations/-"),
        "compute.googleapis.com": lambda: compute_v1.RegionsClient(**client_options(urls, "compute"))
        .get(project="gpuplat-test", region="us-central1"),
        "secretmanager.googleapis.com": lambda: list(secretmanager_v1.SecretManagerServiceClient(
            **client_options(urls, "secretmanager")).list_secrets(parent="projects/gpuplat-test")),
        # The catalog is project-less: the project is the caller's quota project (the x-goog-user-project header).
        "cloudbilling.googleapis.com": lambda: list(billing_v1.CloudCatalogClient(**client_options(urls, "billing"))
                                                    .list_services(metadata=[("x-goog-user-project", "gpuplat-test")])),
    }
    for service, call in calls.items():
        with pytest.raises(exceptions.Forbidden) as info:
            call()
        assert info.value.reason == "SERVICE_DISABLED" and info.value.metadata["service"] == service, service
    su.batch_enable_services(request={"parent": PROJECT, "service_ids": list(calls)}).result(timeout=10)
    for call in calls.values():
        call()


def test_a_project_without_billing_cannot_enable_paid_services(sandbox, su):
    """Service Usage refuses paid services in a project without a billing account: 400 FAILED_PRECONDITION
    "Billing account for project '<number>' is not found. Billing must be enabled for activation of
    service(s) '...' to proceed.", ErrorInfo UREQ_PROJECT_BILLING_NOT_FOUND (GoogleCloudPlatform/deploystack#52,
    kyegomez/zeta#71). Free services still enable."""
    admin(sandbox, "POST", "/sandbox/projects", {"project": "gpuplat-test", "billing": False})
    with pytest.raises(exceptions.BadRequest) as info:
        su.batch_enable_services(request={"parent": PROJECT, "service_ids": ["compute.googleapis.com"]})
    assert "Billing account for project" in info.value.message and "'compute.googleapis.com'" in info.value.message
    assert info.value.reason == "UREQ_PROJECT_BILLING_NOT_FOUND"
    su.batch_enable_services(request={"parent": PROJECT, "service_ids": ["iam.googleapis.com"]}).result(timeout=10)


def test_a_service_enabled_a_moment_ago_may_still_answer_service_disabled(sandbox, su):
    """"If you enabled this API recently, wait a few minutes for the action to propagate to our systems and
    retry." (the SERVICE_DISABLED message itself): the sandbox holds a newly enabled service back for the
    project's `propagation` seconds of simulated time."""
    from google.cloud import container_v1

    from tests.conftest import client_options

    admin(sandbox, "POST", "/sandbox/projects", {"project": "gpuplat-test", "propagation": 60})
    su.batch_enable_services(request={"parent": PROJECT, "service_ids": ["container.googleapis.com"]}).result(timeout=10)
    gke = container_v1.ClusterManagerClient(**client_options(sandbox.urls(), "container"))
    with pytest.raises(exceptions.Forbidden, match="enabled this API recently"):
        gke.list_clusters(parent="projects/gpuplat-test/locations/-")
    admin(sandbox, "POST", "/sandbox/clock/advance", {"seconds": 61})
    assert list(gke.list_clusters(parent="projects/gpuplat-test/locations/-").clusters) == []
