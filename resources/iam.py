"""Google identities in gpuplat's words: service accounts, IAM policies, Artifact Registry repositories.

Clients are the official ones: IAM admin (service accounts; its Python client speaks only gRPC, so
the sandbox is reached over an insecure loopback channel), Resource Manager v3 (the project's
policy) and Artifact Registry v1. Every policy change is a read-modify-write carrying the read
policy's etag: only the members asked for are added, nobody else's binding is touched, and a
concurrent change (409 ABORTED) is read again and retried.

Policies are read and written as version 3: "any operation that affects conditional role bindings must
specify version 3", reading one that holds a condition included, and a version-1 write without the
etag would drop every condition (google/iam/v1/policy.proto). So a conditional binding someone else
made is read whole and written back exactly as it was, and `auditConfigs` are left to the server (the
default update mask, "bindings, etag", never changes them).
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

from .errors import PolicyRace
from .gcp import GcpProject
from .google_errors import gexc, translated

POLICY_ATTEMPTS = 6
POLICY_VERSION = 3
ERR_POLICY_RACE = "the IAM policy kept changing under gpuplat"

Binding = tuple[str, str]  # (role, member)


def members_by_role(policy) -> dict[str, frozenset[str]]:
    """A policy's unconditional bindings (conditional ones are never gpuplat's)."""
    out: dict[str, set[str]] = {}
    for b in policy.bindings:
        if not b.condition.expression:
            out.setdefault(b.role, set()).update(b.members)
    return {role: frozenset(m) for role, m in out.items()}


class Iam(GcpProject):
    """One project's service accounts, IAM policies and Artifact Registry repositories."""

    # ---- lazy clients ---------------------------------------------------------------------------
    @cached_property
    def _admin(self):
        from google.cloud import iam_admin_v1
        if self.endpoints is None:
            return self.shared_client("iam_grpc", iam_admin_v1.IAMClient)
        import grpc
        from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
        return self.shared_client("iam_grpc", lambda: iam_admin_v1.IAMClient(
            transport=IAMGrpcTransport(channel=grpc.insecure_channel(self.endpoints["iam_grpc"]))))

    @cached_property
    def _projects(self):
        from google.cloud import resourcemanager_v3
        return self.shared_client("cloudresourcemanager", lambda: resourcemanager_v3.ProjectsClient(**self._kwargs("cloudresourcemanager")))

    @cached_property
    def _registry(self):
        from google.cloud import artifactregistry_v1
        return self.shared_client("artifactregistry", lambda: artifactregistry_v1.ArtifactRegistryClient(**self._kwargs("artifactregistry")))

    # ---- service accounts -------------------------------------------------------------------------
    def email(self, account_id: str) -> str:
        return f"{account_id}@{self.project}.iam.gserviceaccount.com"

    @translated("iam")
    def accounts(self) -> frozenset[str]:
        """The emails of the project's service accounts, every page (100 a page). Empty when the caller may
        not list them: then each account is asked for by name (`account_exists`)."""
        try:
            pages = self._admin.list_service_accounts(request={"name": f"projects/{self.project}", "page_size": 100},
                                                      retry=self.retry)
            return frozenset(a.email for a in pages)
        except gexc.PermissionDenied:
            return frozenset()

    @translated("iam")
    def account_exists(self, email: str) -> bool:
        try:
            self._admin.get_service_account(name=f"projects/-/serviceAccounts/{email}", retry=self.retry)
        except (gexc.NotFound, gexc.PermissionDenied):  # IAM answers 403 for a wildcard name that does not exist
            return False
        return True

    @translated("iam")
    def create_account(self, account_id: str, display_name: str, description: str = "") -> bool:
        """Create it; one that exists (created meanwhile by someone else) is left as it is (False)."""
        from google.cloud import iam_admin_v1
        try:
            self._admin.create_service_account(
                name=f"projects/{self.project}", account_id=account_id,
                service_account=iam_admin_v1.ServiceAccount(display_name=display_name, description=description),
                retry=self.retry)
        except gexc.Conflict:  # ALREADY_EXISTS (REST maps every 409 to Conflict, gRPC to its subclass)
            return False
        return True

    # ---- policies ------------------------------------------------------------------------------------
    def _policy_io(self, resource: str) -> tuple[Callable, Callable]:
        if resource.startswith(f"projects/{self.project}/serviceAccounts/"):
            client = self._admin
        elif "/repositories/" in resource:
            client = self._registry
        else:
            client = self._projects
        def get():
            return client.get_iam_policy(request={"resource": resource, "options": {"requested_policy_version": 3}},
                                         retry=self.retry)

        def put(policy):
            policy.version = POLICY_VERSION
            return client.set_iam_policy(request={"resource": resource, "policy": policy}, retry=self.retry)
        return get, put

    @translated("iam")
    def policy(self, resource: str) -> dict[str, frozenset[str]]:
        return members_by_role(self._policy_io(resource)[0]())

    @translated("iam")
    def add_members(self, resource: str, wanted: list[Binding]) -> int:
        """Add the (role, member) pairs missing from `resource`'s policy; returns how many were added.
        A stale etag (someone changed the policy since the read) reads again and retries."""
        get, put = self._policy_io(resource)
        for attempt in range(POLICY_ATTEMPTS):
            policy = get()
            added = 0
            for role, member in wanted:
                binding = next((b for b in policy.bindings if b.role == role and not b.condition.expression), None)
                if binding is None:
                    policy.bindings.add(role=role, members=[member])
                    added += 1
                elif member not in binding.members:
                    binding.members.append(member)
                    added += 1
            if not added:
                return 0
            try:
                put(policy)  # carries the etag read above
                return added
            except gexc.Conflict:  # ABORTED: concurrent policy changes; read again
                self.sleeper(min(0.2 * 2 ** attempt, 5.0))
        raise PolicyRace(f"{ERR_POLICY_RACE}: {resource} changed on each of {POLICY_ATTEMPTS} read-modify-writes",
                         "someone else keeps changing this policy: materialize again once they are done")

    def project_resource(self) -> str:
        return f"projects/{self.project}"

    def account_resource(self, email: str) -> str:
        return f"projects/{self.project}/serviceAccounts/{email}"

    # ---- Artifact Registry ---------------------------------------------------------------------------
    def repository_name(self, location: str, repo_id: str) -> str:
        return f"projects/{self.project}/locations/{location}/repositories/{repo_id}"

    @translated("artifactregistry")
    def repository(self, location: str, repo_id: str) -> str | None:
        """The repository's format (DOCKER, ...), or None when it does not exist."""
        try:
            repo = self._registry.get_repository(name=self.repository_name(location, repo_id), retry=self.retry)
        except gexc.NotFound:
            return None
        return repo.format_.name

    @translated("artifactregistry")
    def create_repository(self, location: str, repo_id: str, description: str, timeout: float = 300.0) -> None:
        from google.cloud import artifactregistry_v1 as ar
        try:
            op = self._registry.create_repository(
                parent=f"projects/{self.project}/locations/{location}", repository_id=repo_id,
                repository=ar.Repository(format_=ar.Repository.Format.DOCKER, description=description),
                retry=self.retry)
        except gexc.Conflict:  # ALREADY_EXISTS (REST maps every 409 to Conflict, gRPC to its subclass)
            return
        op.result(timeout=timeout, retry=self.retry)


def account_known(iam, email: str) -> bool:
    """Whether a service account exists. A project's own account is looked up in the project's list (one
    list a tick for a fleet sharing a project, through the tick's memo, instead of one read per account);
    one not in it is asked for by name, which decides: the list is eventually consistent, and an account
    created a moment ago may be missing from it (https://cloud.google.com/iam/docs/service-accounts-create)."""
    if email.endswith(f"@{iam.project}.iam.gserviceaccount.com") and email in iam.accounts():
        return True
    return iam.account_exists(email)
