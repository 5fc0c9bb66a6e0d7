"""secrets_seeded: the platform's internal random secrets, the seed's set in the seed's formats; external ones reported.

The set is what the fork's `scripts/seed-secrets.sh` creates (its HEX_KEYS and COOKIE_KEY, read from
the script; the seed's list when a fork has none), whatever the feature flags: hex32
values (64 hex characters), the oauth2-proxy cookie secret as hex16 (32 characters: oauth2-proxy
needs a 16/24/32-byte secret), and Dex's admin password (hex16) with its bcrypt `$2a$` hash (cost
10). Running the seed's script after gpuplat, or gpuplat after it, creates nothing.

Create-if-absent, never overwrite, never delete. A secret counts as present only with an enabled
version: a secret left without one (a run killed between create and add-version) reads as absent
to External Secrets, so the next run adds a version. Dex's hash is always derived from the stored
password, read back from the backend, so two runs racing on a blank project cannot leave a hash of
a password nobody stored. Values are generated or compared in memory and never reach a log, an
event, metadata or stdout.
"""

from __future__ import annotations


import secrets as pysecrets
from dataclasses import dataclass


from .config import ESO_PROVIDER_DOCS, ConfigError, EnvConfig
from .fork import SEED_SECRET_DEFAULTS, Fork, remote_keys
from .piece import Check, Outcome, Piece, PieceError, Run
from .plan import Action

HEX32 = "hex32"  # openssl rand -hex 32: 64 hex characters
HEX16 = "hex16"  # openssl rand -hex 16: 32 hex characters
DEX_PASSWORD = SEED_SECRET_DEFAULTS.dex_password
DEX_HASH = SEED_SECRET_DEFAULTS.dex_hash
DEX_ADMIN = (DEX_PASSWORD, DEX_HASH)
# htpasswd -bnBC 10, as the seed hashes it; Dex (Go) reads the $2a$ prefix.
BCRYPT_COST = 10
# Concurrent first runs may each add a password version; each run ends by re-deriving the hash from
# the latest one, so the last run to finish leaves them in agreement.
DEX_DERIVE_ATTEMPTS = 3


@dataclass(frozen=True)
class SecretsSpec:
    project: str
    backend: str
    internal: tuple[tuple[str, str], ...]  # (name, generator)
    external: tuple[str, ...]
    names_from: str = ""  # the seed-secrets.sh the internal names were read from
    # Every key an ExternalSecret of the fork reads for the enabled layers -> the files reading it;
    # None with `platform_keys_error` when the fork's files could not say.
    platform_keys: dict | None = None
    platform_keys_error: str = ""

    @property
    def internal_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.internal) + DEX_ADMIN

    @property
    def all_names(self) -> tuple[str, ...]:
        return self.internal_names + self.external

    @property
    def observed_names(self) -> tuple[str, ...]:
        extra = tuple(k for k in (self.platform_keys or {}) if k not in self.all_names)
        return self.all_names + extra


@dataclass(frozen=True)
class SecretsObserved:
    writable: bool
    present: tuple[str, ...]  # names whose latest version (what ESO reads) is ENABLED; never values
    versionless: tuple[str, ...] = ()  # created, but `latest` cannot be read (no version, or it is disabled)
    # Whether the stored hash verifies the stored password: "matches", "differs", or "" when either is absent.
    dex_hash: str = ""
    # Off gcpsm: keys read by a live ExternalSecret that ESO reports not Ready (the backend lacks them
    # or refuses them); ESO's own verdict, since gpuplat cannot read that backend.
    unsynced_keys: tuple[str, ...] = ()
    # Why each of `versionless` cannot be read: (name, "no version" | "its newest version 3 is DISABLED").
    unreadable: tuple[tuple[str, str], ...] = ()

    def owned(self) -> dict:
        return {"writable": self.writable, "present": sorted(self.present), "versionless": sorted(self.versionless),
                "dex_hash": self.dex_hash}


# ---- desired ------------------------------------------------------------------------------------
def desired_secrets(env: EnvConfig) -> SecretsSpec:
    fork = Fork.of(env)
    names = fork.seed_secret_names()
    internal = tuple((n, HEX32) for n in names.hex_keys) + ((names.cookie_key, HEX16),)
    try:
        keys, error = fork.external_secret_keys(env.repoURL, env.substrate.layer), ""
    except ConfigError as exc:  # seeding does not need the groups file; the check says what is wrong
        keys, error = None, str(exc)
    return SecretsSpec(env.cluster.projectID, env.secret_backend, internal, tuple(env.substrate.external_secrets),
                       names.source, keys, error)


# ---- observe ------------------------------------------------------------------------------------
def observe_secrets(run: Run, spec: SecretsSpec) -> SecretsObserved:
    if spec.backend != "gcpsm":
        # gpuplat cannot write other backends: what counts is what ESO materialized in the cluster.
        kube = run.conn.kube
        names = {name for _, name in kube.secret_names()}
        unsynced = set()
        for es in kube.list("external-secrets.io/v1", "ExternalSecret"):
            ready = next((c for c in (es.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
            if ready.get("status") == "False":
                unsynced.update(remote_keys(es))
        return SecretsObserved(False, tuple(n for n in spec.all_names if n in names),
                               unsynced_keys=tuple(sorted(unsynced)))
    g = run.conn.google
    ids = g.secret_ids()
    existing = [n for n in spec.observed_names if n in ids]
    # ESO reads `versions/latest`: the newest version whatever its state, so a newer disabled version hides
    # an older enabled one (https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/access).
    latest = {n: g.latest_version(n) for n in existing}
    enabled = {n for n, v in latest.items() if v is not None and v[1] == "ENABLED"}
    dex = ""
    if set(DEX_ADMIN) <= enabled:
        dex = dex_verdict(g, latest[DEX_PASSWORD], latest[DEX_HASH])
    return SecretsObserved(True, tuple(n for n in existing if n in enabled),
                           tuple(n for n in existing if n not in enabled), dex,
                           unreadable=tuple((n, "no version" if latest[n] is None else
                                             f"its newest version {latest[n][0]} is {latest[n][1]}")
                                            for n in existing if n not in enabled))


# (project, each secret's version and its create time) -> "matches" | "differs". A version's payload never
# changes (Secret Manager versions are immutable; a secret deleted and created again numbers its versions
# from 1 anew, which the create time tells apart), so the verdict for that pair of versions is fixed: a
# drift tick over hundreds of environments need neither run bcrypt (about 60 ms) nor read either value
# every minute. Only the verdict is kept, never a value.
_DEX_VERDICTS: dict[tuple[str, str, str, str, str], str] = {}
_DEX_VERDICTS_MAX = 10_000


def dex_verdict(g, password: tuple[str, str, str], hashed: tuple[str, str, str]) -> str:
    """Both judged at the versions just listed (a version added meanwhile is judged on the next look)."""
    key = (g.project, password[0], password[2], hashed[0], hashed[2])
    verdict = _DEX_VERDICTS.get(key)
    if verdict is None:
        pw, digest = g.access_secret(DEX_PASSWORD, password[0]), g.access_secret(DEX_HASH, hashed[0])
        verdict = "matches" if hash_verifies(pw, digest) else "differs"
        if pw is None or digest is None:  # a version gone between the listing and the read: judge it again next time
            return verdict
        if len(_DEX_VERDICTS) >= _DEX_VERDICTS_MAX:
            _DEX_VERDICTS.clear()
        _DEX_VERDICTS[key] = verdict
    return verdict


def hash_verifies(password: bytes | None, hashed: bytes | None) -> bool:
    if not password or not hashed:
        return False
    try:
        import bcrypt
        return bcrypt.checkpw(password.strip(), hashed.strip())
    except ValueError:  # not a bcrypt hash at all
        return False


# ---- plan ---------------------------------------------------------------------------------------
def plan_secrets(spec: SecretsSpec, observed: SecretsObserved) -> list[Action]:
    if not observed.writable:
        return []
    present, versionless = set(observed.present), set(observed.versionless)
    actions = []
    for name, gen in spec.internal:
        if name in versionless:
            actions.append(Action("update", f"secret {name}", "version", desired="an enabled version",
                                  observed="none (reads as absent)", args={"generator": gen, "name": name}))
        elif name not in present:
            actions.append(Action("create", f"secret {name}", desired=f"random ({gen})",
                                  args={"generator": gen, "name": name}))
    has_pw, has_hash = DEX_PASSWORD in present, DEX_HASH in present
    unreadable = dict(observed.unreadable)
    if has_hash and not has_pw and unreadable.get(DEX_PASSWORD, "no version") != "no version":
        # The password is there, its newest version disabled by someone: enabling it keeps the pair.
        actions.append(Action("cannot-fix", f"secret {DEX_PASSWORD}", observed=unreadable[DEX_PASSWORD],
                              remedy=f"enable that version again (gcloud secrets versions enable <version> --secret "
                                     f"{DEX_PASSWORD}), or rotate the admin (the seed's make reset-dex-admin)"))
    elif has_hash and not has_pw:
        actions.append(Action("cannot-fix", f"secret {DEX_PASSWORD}", observed="absent while its hash exists",
                              remedy="bcrypt is one-way, so the password cannot be recovered from the hash: rotate "
                                     f"the admin (the seed's make reset-dex-admin), or disable every version of "
                                     f"{DEX_HASH} to let gpuplat create a new pair"))
    elif not has_pw:
        actions.append(Action("create", f"secrets {DEX_PASSWORD} + {DEX_HASH}",
                              desired="random (hex16) + its bcrypt $2a$ hash", args={"dex": True}))
    elif not has_hash:
        actions.append(Action("create", f"secret {DEX_HASH}", desired=f"bcrypt $2a$ of the stored {DEX_PASSWORD}",
                              args={"dex": True}))
    elif observed.dex_hash == "differs":
        actions.append(Action("update", f"secret {DEX_HASH}", "version", desired=f"verifies {DEX_PASSWORD}",
                              observed="does not verify it", args={"dex": True}))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def generate(generator: str) -> bytes:
    return pysecrets.token_hex(32 if generator == HEX32 else 16).encode()


def dex_hash_of(password: bytes) -> bytes:
    # bcrypt writes $2b$; Dex (Go's bcrypt) wants $2a$, the same algorithm under the older prefix.
    import bcrypt
    return b"$2a$" + bcrypt.hashpw(password, bcrypt.gensalt(rounds=BCRYPT_COST))[4:]


def readable(g, name: str) -> bool:
    """Whether ESO can read the secret: its latest version is ENABLED."""
    latest = g.latest_version(name)
    return latest is not None and latest[1] == "ENABLED"


def ensure_version(g, name: str, value) -> bool:
    """Create the secret if absent and give it a version if it has none; True when a version was added.
    `value` is called only when a version is needed, so no value is generated for nothing."""
    g.create_secret(name)
    if readable(g, name):  # another run (or the seed's script) got there first
        return False
    g.add_secret_version(name, value())
    return True


def ensure_dex_admin(g) -> int:
    """The password once, then a hash derived from the password as stored (not as generated here)."""
    added = int(ensure_version(g, DEX_PASSWORD, lambda: generate(HEX16)))
    for _ in range(DEX_DERIVE_ATTEMPTS):
        password = g.access_secret(DEX_PASSWORD)
        if password is None:
            raise PieceError(f"{DEX_PASSWORD} has no readable version right after it was written")
        if hash_verifies(password, g.access_secret(DEX_HASH)):
            return added
        g.create_secret(DEX_HASH)
        g.add_secret_version(DEX_HASH, dex_hash_of(password.strip()))
        added += 1
    raise PieceError(f"{DEX_HASH} still does not verify {DEX_PASSWORD} after {DEX_DERIVE_ATTEMPTS} attempts: "
                     f"another writer keeps changing the password")


def apply_secrets(run: Run, spec: SecretsSpec, observed: SecretsObserved, actions: list[Action]) -> None:
    g = run.conn.google
    added = 0
    for a in actions:
        if a.kind not in ("create", "update"):
            continue
        if a.args.get("dex"):
            added += ensure_dex_admin(g)
        else:
            added += ensure_version(g, a.args["name"], lambda gen=a.args["generator"]: generate(gen))
    run.log.info(f"added {added} secret version(s) in Secret Manager of {spec.project} (names in the plan; values "
                 f"never logged)")


# ---- checks -------------------------------------------------------------------------------------
def check_internal(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    wanted = list(spec.internal_names)
    if not observed.writable:
        # gpuplat cannot write this backend: eso_secrets_materialized says whether the keys reached the cluster.
        return Outcome(True, f"backend {spec.backend}: gpuplat does not write it; the {len(wanted)} keys it needs "
                             f"are listed by eso_secrets_materialized", {"keys": ", ".join(wanted)})
    missing = [n for n in wanted if n not in observed.present]
    versionless = [n for n in missing if n in observed.versionless]
    why = dict(observed.unreadable)
    hidden = [f"{n}: {why[n]}" for n in versionless if why.get(n, "no version") != "no version"]
    description = (f"{len(wanted) - len(missing)}/{len(wanted)} internal secrets readable in Secret Manager (their "
                   f"latest version enabled, what ESO reads)")
    if hidden:
        description += "; ESO cannot read " + "; ".join(hidden)
    remedy = ""
    if missing:
        remedy = "materialize secrets_seeded (it adds a version to each unreadable secret)"
        if hidden:
            remedy += (f", or enable the disabled version yourself (gcloud secrets versions enable <version> --secret "
                       f"<name> --project {env.cluster.projectID})")
    return Outcome(not missing, description,
                   {"expected": len(wanted), "missing": ", ".join(missing),
                    "without_enabled_version": ", ".join(versionless), "remedy": remedy})


def check_dex_hash(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    if not observed.writable:
        return Outcome(True, f"backend {spec.backend}: gpuplat neither writes nor reads it; the seed's script tells "
                             f"you to store {DEX_HASH} as the bcrypt of {DEX_PASSWORD}")
    if observed.dex_hash == "matches":
        return Outcome(True, f"{DEX_HASH} verifies {DEX_PASSWORD} (bcrypt, checked in this process; neither value "
                             f"shown)")
    if observed.dex_hash == "differs":
        return Outcome(False, f"{DEX_HASH} does not verify {DEX_PASSWORD}: Dex would refuse the stored password",
                       {"remedy": f"materialize secrets_seeded: it adds a {DEX_HASH} version derived from the stored "
                                  f"password"})
    absent = [n for n in DEX_ADMIN if n not in observed.present]
    return Outcome(False, f"cannot verify: {', '.join(absent)} absent or without an enabled version",
                   {"remedy": "materialize secrets_seeded"})


def check_materialized(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    if observed.writable:
        return Outcome(True, "gcpsm: gpuplat seeds Secret Manager itself (internal_secrets_present); ESO reads it "
                             "through Workload Identity")
    missing = [n for n in spec.all_names if n not in observed.present]
    return Outcome(not missing, f"{len(spec.all_names) - len(missing)}/{len(spec.all_names)} Kubernetes Secrets "
                                f"materialized by ESO from {spec.backend}",
                   {"keys_that_must_exist": ", ".join(spec.all_names), "missing": ", ".join(missing),
                    "eso_provider_docs": ESO_PROVIDER_DOCS,
                    "remedy": (f"create {', '.join(missing)} in your {spec.backend} backend with its own tooling "
                               f"(vault kv put, aws secretsmanager create-secret, kubectl); fill the provider block of "
                               f"ClusterSecretStore secret-store; ESO then materializes them") if missing else ""})


def check_external(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    missing = [n for n in spec.external if n not in observed.present]
    remedy = ""
    if missing and observed.writable:
        remedy = "; ".join(f"printf %s \"$VALUE\" | gcloud secrets create {n} --data-file=- --project "
                           f"{spec.project}" for n in missing)
    elif missing:
        remedy = f"create {', '.join(missing)} in your {spec.backend} backend; ESO provider docs: {ESO_PROVIDER_DOCS}"
    return Outcome(not missing, f"external secrets: {len(spec.external) - len(missing)}/{len(spec.external)} present",
                   {"present": ", ".join(n for n in spec.external if n not in missing), "missing": ", ".join(missing),
                    "remedy": remedy})


def check_platform_keys(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    if spec.platform_keys is None:
        return Outcome(False, f"cannot tell which keys the fork's ExternalSecrets read: {spec.platform_keys_error}")
    keys = spec.platform_keys
    if not observed.writable:
        failing = [k for k in keys if k in observed.unsynced_keys]
        return Outcome(not failing, f"backend {spec.backend}: ESO reports {len(failing)} of the {len(keys)} keys the "
                                    f"fork's ExternalSecrets read as not syncing",
                       {"keys": ", ".join(keys), "not_syncing": ", ".join(failing),
                        "remedy": f"create {', '.join(failing)} in your {spec.backend} backend ({ESO_PROVIDER_DOCS})"
                                  if failing else ""})
    missing = [k for k in keys if k not in observed.present]
    return Outcome(not missing, f"{len(keys) - len(missing)}/{len(keys)} keys the fork's ExternalSecrets read (layers "
                                f"of {env.substrate.layer}) exist in Secret Manager",
                   {"missing": ", ".join(missing),
                    "read_by": "; ".join(f"{k}: {', '.join(keys[k])}" for k in missing),
                    "remedy": (f"internal ones: materialize secrets_seeded; your own: printf %s \"$VALUE\" | gcloud "
                               f"secrets create <key> --data-file=- --project {spec.project}") if missing else ""})


class SecretsSeeded(Piece[SecretsSpec, SecretsObserved]):
    name = "secrets_seeded"
    description = ("The platform's internal random secrets exist with an enabled version (created once, never "
                   "overwritten); external ones are reported.")
    group = "cloud"
    kinds = frozenset({"gcp", "secretmanager"})
    deps = ("apis_enabled",)
    owned_fields = ("existence of each internal secret with an enabled version (never its value)",
                    "dex-admin-hash verifying dex-admin-password")
    checks = (Check("internal_secrets_present", "Every internal random secret exists in the backend with an enabled "
                    "version.", check_internal, blocking=True),
              Check("dex_admin_hash_matches", "dex-admin-hash is the bcrypt of dex-admin-password (verified in process, "
                    "neither value shown).", check_dex_hash),
              Check("external_secrets_present", "Every external secret the config needs exists.", check_external),
              Check("platform_secrets_exist", "Every key an ExternalSecret of the fork reads (for the enabled layers) "
                    "exists in the backend; missing ones named, never a value.", check_platform_keys),
              Check("eso_secrets_materialized", "Off gcpsm: ESO has materialized every Kubernetes Secret the platform "
                    "reads.", check_materialized))

    def desired(self, env: EnvConfig) -> SecretsSpec:
        return desired_secrets(env)

    def observe(self, run: Run, spec: SecretsSpec) -> SecretsObserved:
        return observe_secrets(run, spec)

    def plan(self, spec: SecretsSpec, observed: SecretsObserved) -> list[Action]:
        return plan_secrets(spec, observed)

    def apply(self, run: Run, spec: SecretsSpec, observed: SecretsObserved, actions: list[Action]) -> None:
        apply_secrets(run, spec, observed, actions)

    def links(self, env: EnvConfig, observed: SecretsObserved) -> dict[str, str]:
        return ({"console": f"https://console.cloud.google.com/security/secret-manager?project="
                           f"{env.cluster.projectID}"} if env.secret_backend == "gcpsm" else
                {"eso_provider_docs": ESO_PROVIDER_DOCS})

    def keeps_when_paused(self, env: EnvConfig) -> bool:
        # Secret Manager outlives the cluster; another backend is read through the cluster, gone while paused.
        return env.secret_backend == "gcpsm"


PIECE = SecretsSeeded()
