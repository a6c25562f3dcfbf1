"""A container engine the tests own, and a Python base image that needs no registry.

`running_engine()` starts a private dockerd (installing Debian's docker.io first when it is
missing and we are root) and on exit removes every container it ran and stops it. It leaves
the host's docker0 and iptables alone (--bridge=none --iptables=false), so several engines
can run at once: builds use the host's network (`docker build --network host`), containers
run on the engine's own bridge network, `engine.network`, reached through loopback ports.
`image_registry()` runs an image registry (Debian's docker-registry) on a loopback port, with a
login, for the deploy steps to push to and pull from. `base_image()` makes the Dockerfile's
base available: present or pulled when a registry answers, else built with debootstrap from the
host's Debian mirror, with the rootfs tarball cached so later runs take seconds. Nothing here
depends on pytest: when no engine (or registry) can start, EngineUnavailable says why, for the
caller to skip with.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services import free_port, http_status, log_tail, running_process, wait_until

ENGINE_READY_TIMEOUT = 60.0
NETWORK = "mvmlops"
PULL_TIMEOUT = 120.0
SUITE = "bookworm"  # the Debian release of the python:*-slim-bookworm images
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
CACHE_DIR = Path(os.environ.get("MVMLOPS_BASE_CACHE", Path.home() / ".cache" / "mvmlops-base"))


class EngineUnavailable(RuntimeError):
    """No container engine can run here; the message says why."""


@dataclass
class Engine:
    """A dockerd of our own, reached through its socket under `root`."""

    root: Path
    process: subprocess.Popen
    network: str = NETWORK
    bridge: str = ""  # the network's interface on the host, br-<network id>

    @property
    def host(self) -> str:
        """The DOCKER_HOST of this engine."""
        return f"unix://{self.root}/docker.sock"

    def variables(self) -> dict[str, str]:
        """What a docker CLI needs to reach this engine, with a client config of its own."""
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.root / "cli")}

    def env(self) -> dict[str, str]:
        """This process's environment, pointed at this engine."""
        return {**os.environ, **self.variables()}

    def docker(self, *args: str, timeout: float = 120, check: bool = True):
        """Run `docker args` against this engine; raise with its output when it fails."""
        result = subprocess.run(
            ["docker", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}"
            )
        return result

    def stop(self) -> None:
        """Remove every container, stop dockerd, and delete its state."""
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=120)
        stop_dockerd(self.process)
        # dockerd leaves the bridges of its networks up when it stops.
        if self.bridge and Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        remove_tree(self.root)


# --------------------------------------------------------------------------- the engine


def apt_install(*packages: str) -> None:
    """apt-get update and install `packages`; EngineUnavailable with apt's output on failure."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EngineUnavailable(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")


def ensure_tools(*tools: str, packages: tuple[str, ...] = ("docker.io", "debootstrap")) -> None:
    """Install the Debian `packages` when one of `tools` is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineUnavailable(
            f"{', '.join(missing)} not found, and installing them (Debian packages "
            f"{', '.join(packages)}) needs root with apt-get"
        )
    apt_install(*packages)


def start_engine() -> Engine:
    """Start a dockerd with its state in a new short temp dir; wait until it answers."""
    ensure_tools("docker", "dockerd")
    # Unix socket paths must stay under ~100 characters: a short dir right under /tmp.
    root = Path(tempfile.mkdtemp(prefix="mvd-", dir="/tmp"))
    command = ["dockerd", "--data-root", f"{root}/data", "--exec-root", f"{root}/exec"]
    command += ["-H", f"unix://{root}/docker.sock", "--pidfile", f"{root}/dockerd.pid"]
    command += ["--bridge=none", "--iptables=false"]
    with (root / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = Engine(root, process)
    try:
        wait_until(lambda: answering(engine), ENGINE_READY_TIMEOUT, "dockerd to answer")
        create_network(engine)
    except (TimeoutError, EngineUnavailable) as err:
        reason = (
            f"dockerd did not start: {err}\n--- dockerd.log ---\n{log_tail(root / 'dockerd.log')}"
        )
        engine.stop()
        raise EngineUnavailable(reason) from err
    return engine


def answering(engine: Engine) -> bool:
    """Whether `docker info` succeeds; EngineUnavailable once dockerd has exited."""
    if engine.process.poll() is not None:
        raise EngineUnavailable(f"dockerd exited with code {engine.process.returncode}")
    return engine.docker("info", check=False, timeout=10).returncode == 0


def create_network(engine: Engine, attempts: int = 5) -> None:
    """The engine's bridge network, on a random 10.x.y.0/24 that no host route overlaps."""
    for _ in range(attempts):
        subnet = f"10.{random.randint(64, 254)}.{random.randint(0, 255)}.0/24"
        created = engine.docker(
            "network", "create", "--subnet", subnet, engine.network, check=False
        )
        if created.returncode == 0:
            engine.bridge = f"br-{created.stdout.strip()[:12]}"
            return
    raise EngineUnavailable(f"no free subnet for a bridge network: {created.stderr.strip()}")


def stop_dockerd(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM dockerd so it shuts containerd down itself; SIGKILL the group if it hangs."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def unmount_under(root: Path) -> None:
    """Lazily unmount whatever is still mounted below `root`, deepest first."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_tree(root: Path) -> None:
    """Unmount what is left below `root`, then delete it.

    rm is several times faster than shutil.rmtree on an engine's GBs of small files, and
    --one-file-system keeps it out of any mount that would not go.
    """
    unmount_under(root)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True, check=False)


@contextlib.contextmanager
def running_engine() -> Iterator[Engine]:
    """A private dockerd for the duration of the block."""
    engine = start_engine()
    try:
        yield engine
    finally:
        engine.stop()


# --------------------------------------------------------------------------- an image registry


@dataclass(frozen=True)
class Registry:
    """An image registry on loopback that lets one user in."""

    host: str  # 127.0.0.1:<port>, the first part of an image name
    username: str
    password: str

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds for `repository` (the image name after the host)."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/tags/list",
            headers={"Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return sorted(json.loads(response.read())["tags"] or [])


@contextlib.contextmanager
def image_registry(base_dir: Path) -> Iterator[Registry]:
    """Debian's docker-registry on a free loopback port with a bcrypt htpasswd login.

    A dockerd pushes to it over plain HTTP: 127.0.0.0/8 is an insecure registry by default.
    """
    ensure_tools("docker-registry", "htpasswd", packages=("docker-registry", "apache2-utils"))
    username, password = "deployer", secrets.token_urlsafe(16)
    entry = subprocess.run(
        ["htpasswd", "-Bbn", username, password], capture_output=True, text=True, check=True
    )
    (base_dir / "htpasswd").write_text(entry.stdout)
    port = free_port()
    config = base_dir / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base_dir / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n"
        f"auth:\n  htpasswd:\n    realm: tests\n    path: {base_dir / 'htpasswd'}\n"
    )
    log = base_dir / "registry.log"
    with running_process(["docker-registry", "serve", str(config)], log) as process:
        try:  # without credentials it answers 401: up, and asking for the login
            wait_until(
                lambda: http_status(f"http://127.0.0.1:{port}/v2/", process) == 401,
                ENGINE_READY_TIMEOUT,
                "docker-registry to answer",
            )
        except (TimeoutError, RuntimeError) as err:
            message = f"docker-registry did not start: {err}\n{log_tail(log)}"
            raise EngineUnavailable(message) from err
        yield Registry(f"127.0.0.1:{port}", username, password)


# --------------------------------------------------------------------------- the base image


def local_tag(reference: str) -> str:
    """The reference without its digest: a digest cannot be tagged, a name:tag can."""
    return reference.split("@", 1)[0]


def base_image(engine: Engine, reference: str, cache_dir: Path = CACHE_DIR) -> str:
    """A reference to build FROM: `reference` if present or pullable, else a local build."""
    if engine.docker("image", "inspect", reference, check=False).returncode == 0:
        return reference
    with contextlib.suppress(subprocess.TimeoutExpired):
        if engine.docker("pull", reference, check=False, timeout=PULL_TIMEOUT).returncode == 0:
            return reference
    tag = local_tag(reference)
    if engine.docker("image", "inspect", tag, check=False).returncode != 0:
        tarball = str(rootfs_tarball(cache_dir))
        engine.docker(
            "import", "-c", 'CMD ["python3"]', "-c", "ENV LANG=C.UTF-8", tarball, tag, timeout=600
        )
    return tag


def rootfs_tarball(cache_dir: Path) -> Path:
    """The cached Debian rootfs with Python; debootstrap it the first time (about a minute)."""
    tarball = cache_dir / f"{SUITE}.tar"
    if tarball.is_file():
        return tarball
    ensure_tools("debootstrap")
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mvroot-", dir=cache_dir))
    rootfs = work / "rootfs"
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                SUITE,
                str(rootfs),
                debian_mirror(),
            ],
            timeout=900,
        )
        prepare_rootfs(rootfs)
        run(["tar", "-C", str(rootfs), "-cf", str(work / "rootfs.tar"), "."], timeout=300)
        (work / "rootfs.tar").rename(tarball)
    finally:
        remove_tree(work)
    return tarball


def prepare_rootfs(rootfs: Path) -> None:
    """Trust the host's extra CAs, let pip install system-wide, and name the interpreter python."""
    for cert in EXTRA_CA_DIR.glob("*.crt"):
        shutil.copy(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
    run(["chroot", str(rootfs), "update-ca-certificates"], timeout=120)
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for index in (rootfs / "var/lib/apt/lists").glob("*"):
        if index.is_file():
            index.unlink()
    python = rootfs / "usr/bin/python"
    python.unlink(missing_ok=True)
    python.symlink_to("python3")


def debian_mirror() -> str:
    """The host's Debian mirror for SUITE (deb822 or one-line sources), else deb.debian.org."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.is_file():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs", "").split():
                return fields["URIs"].split()[0]
    one_line = Path("/etc/apt/sources.list")
    if one_line.is_file():
        for match in re.finditer(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", one_line.read_text(), re.M
        ):
            if match[2] == SUITE:
                return match[1]
    return DEFAULT_MIRROR


def run(command: list[str], timeout: float) -> None:
    """Run a host command; raise with the tail of its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{output}")
