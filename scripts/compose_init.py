"""The one-shot init jobs of docker-compose.yml's secured Kafka (issue 12), and the secrets they use.

    python -m scripts.compose_init secrets [DIR]   on the host, before `docker compose up`: one
        random password per Kafka principal and per Postgres role (the superuser's and each
        service's, issue 14) in DIR (default ./secrets), kept if present
    python -m scripts.compose_init tls             service kafka-tls, before the broker starts
    python -m scripts.compose_init setup           service kafka-setup, once the broker is healthy

`tls` makes the CA and the broker's certificate with the very code of the local infra
(`scripts.infra._ensure_tls`), for the names clients use: `kafka` inside the compose network,
TKM_KAFKA_EXTERNAL_HOST outside it, localhost for the broker's own health check. The CA's key
stays in the kafka-pki volume that only this job mounts; the broker gets its key and chain
(kafka-tls volume, owned by the broker image's user), everyone else the CA certificate only
(kafka-ca volume; hand `ca.pem` to the agencies with their credentials).

`setup` connects as `admin` (SASL_SSL, SCRAM-SHA-512: the broker's start script bootstraps the
admin's credential into the metadata log when it formats the storage) and applies the
declaration of shared/kafka_acls.py: the declared topics, the services' SCRAM credentials from
their secret files (set again on every run, so a replaced file rotates the password) and the
services' ACLs. Agencies are onboarded afterwards with `tkm agency add`, as admin.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from scripts.infra import ADMIN_USER, BROKER_USER, InfraError, _ensure_tls
from shared.pii import new_key_line

# the secret files (compose `secrets:`): kafka_<principal>_password
SECRETS_DIR = Path(os.environ.get("TKM_SECRETS_DIR", "/run/secrets"))
PKI_DIR = Path(os.environ.get("TKM_KAFKA_PKI_DIR", "/tkm/pki"))  # CA key: this job only
BROKER_TLS_DIR = Path(os.environ.get("TKM_KAFKA_TLS_DIR", "/tkm/kafka-tls"))
CA_DIR = Path(os.environ.get("TKM_KAFKA_CA_DIR", "/tkm/kafka-ca"))
# the user the apache/kafka image runs its broker as (appuser)
KAFKA_UID = int(os.environ.get("TKM_KAFKA_UID", "1000"))
KAFKA_GID = int(os.environ.get("TKM_KAFKA_GID", "1000"))
# what the broker's start script and JAAS accept without quoting
PASSWORD = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")


def principals() -> tuple[str, ...]:
    from shared.kafka_acls import SERVICES

    return (BROKER_USER, ADMIN_USER, *SERVICES)


def secret_name(principal: str) -> str:
    return f"kafka_{principal}_password"


def read_password(principal: str, directory: Path | None = None) -> str:
    path = (directory or SECRETS_DIR) / secret_name(principal)
    try:
        password = path.read_text().strip()
    except OSError as e:
        raise InfraError(f"the secret {path} cannot be read ({e.strerror}): "
                         "run `python -m scripts.compose_init secrets` on the host") from None
    if not PASSWORD.match(password):
        raise InfraError(f"the secret {path} must be 16-256 characters of A-Z a-z 0-9 . _ ~ -")
    return password


def postgres_secret_names() -> list[str]:
    """Postgres: the superuser's (the image's initdb and infra/postgres's scripts only) and one
    login role per service, owning only its database (docker-compose.yml)."""
    from shared.settings import SERVICE_PORTS

    return ["postgres_admin_password", *(f"postgres_{s}_password" for s in SERVICE_PORTS)]


# the master keys of the services holding personal data (shared.pii): `<kek id> <base64 key>`
PII_KEY_SECRETS = ("pii_recruitment_master_key", "pii_groups_master_key")
PII_KEK_ID = "k1"


def make_secrets(directory: Path) -> list[str]:
    """A random password for every principal that has none in `directory`; returns the new
    files. The directory is private (0700) on the host; the files are 0644 because compose
    bind-mounts them as they are into containers running under other users (the broker's,
    the services')."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    made = []
    names = [secret_name(p) for p in principals()] + postgres_secret_names()
    for name in [*names, *PII_KEY_SECRETS]:
        path = directory / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            # a personal-data master key is a key file line (shared.pii), the rest passwords
            out.write(new_key_line(PII_KEK_ID) + "\n" if name in PII_KEY_SECRETS
                      else secrets.token_urlsafe(32))
        path.chmod(0o644)
        made.append(path.name)
    return made


def tls_hosts(external_host: str | None = None) -> tuple[str, ...]:
    external = (external_host or os.environ.get("TKM_KAFKA_EXTERNAL_HOST") or "127.0.0.1").strip()
    hosts = ["kafka", "localhost", "127.0.0.1", external]
    return tuple(dict.fromkeys(hosts))


def _certificate_hosts(pem: Path) -> set[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in names.get_values_for_type(x509.DNSName)} | {
        str(v) for v in names.get_values_for_type(x509.IPAddress)}


def make_tls(hosts: tuple[str, ...], pki: Path = PKI_DIR, broker_dir: Path = BROKER_TLS_DIR,
             ca_dir: Path = CA_DIR, owner: tuple[int, int] | None = (KAFKA_UID, KAFKA_GID)
             ) -> dict[str, Path]:
    """The CA and broker certificate (made once, in `pki`), copied where the broker and the
    clients read them. A certificate issued for other host names is refused rather than silently
    re-issued under a new CA, which every agency would then have to be sent again."""
    paths = _ensure_tls(pki, hosts)
    issued = _certificate_hosts(paths["broker"])
    if issued != set(hosts):
        raise InfraError(f"the broker certificate names {sorted(issued)}, not {sorted(hosts)} "
                         "(TKM_KAFKA_EXTERNAL_HOST changed?): remove the kafka-pki volume to "
                         "issue a new CA and certificate, then send agencies the new ca.pem")
    broker_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    broker_pem, ca_pem, broker_ca = broker_dir / "broker.pem", ca_dir / "ca.pem", broker_dir / "ca.pem"
    for target in (broker_pem, broker_ca):
        target.unlink(missing_ok=True)
    shutil.copyfile(paths["broker"], broker_pem)
    shutil.copyfile(paths["ca"], broker_ca)
    shutil.copyfile(paths["ca"], ca_pem)
    broker_pem.chmod(0o400)
    for public in (broker_ca, ca_pem):
        public.chmod(0o644)
    ca_dir.chmod(0o755)
    broker_dir.chmod(0o700)
    if owner is not None:  # the job runs as root: hand the broker's files to its user
        for path in (broker_dir, broker_pem, broker_ca):
            os.chown(path, *owner)
    return {"broker": broker_pem, "ca": ca_pem}


async def setup(bootstrap: str, replication_factor: int = 1) -> list[str]:
    """As admin: the declared topics, the services' SCRAM credentials and their ACLs."""
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.kafka_acls import SERVICES, apply_declarations, upsert_scram
    from shared.kafka_security import kafka_security

    admin_client = kafka_security(service=ADMIN_USER).admin_kwargs()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000,
                                **admin_client)
    await admin.start()
    try:
        await upsert_scram(admin, {service: read_password(service) for service in SERVICES})
    finally:
        await admin.close()
    await apply_declarations(bootstrap, admin_client, replication_factor)
    return list(SERVICES)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    try:
        if cmd == "secrets":
            directory = Path(argv[1]) if len(argv) > 1 else Path("secrets")
            made = make_secrets(directory)
            print(f"{directory}: " + (f"made {', '.join(made)}" if made else "all present"))
        elif cmd == "tls":
            hosts = tls_hosts()
            make_tls(hosts)
            print(f"TLS ready for {', '.join(hosts)}")
        elif cmd == "setup":
            bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
            rf = int(os.environ.get("TKM_TOPIC_REPLICATION_FACTOR", "1"))
            users = asyncio.run(setup(bootstrap, rf))
            print(f"topics, ACLs and SCRAM users ({', '.join(users)}) applied on {bootstrap}")
        else:
            print("usage: python -m scripts.compose_init secrets [DIR] | tls | setup",
                  file=sys.stderr)
            return 2
    except (InfraError, ValueError, OSError) as e:  # one line, never a secret
        print(f"compose_init {cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
