"""`shopmesh`: install, start, watch and stop the mesh of this checkout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import jwt
import typer
from kafka.errors import KafkaError
from keycloak.exceptions import KeycloakError
from rich.console import Console

from shopmesh.runtime import invoices
from shopmesh.runtime.settings import Settings, load
from shopmesh.tooling import bringup, codegen, gateway, health, install, instances, realm, watch
from shopmesh.tooling.programs import Program, programs
from shopmesh.tooling.supervise import UMASK, Supervisor

#: Wide enough for the longest part's name, analytics-totals-by-customer.
NAME_WIDTH = 29

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


class Topology(StrEnum):
    single = "single"
    cluster = "cluster"


TopologyOption = Annotated[
    Topology | None,
    typer.Option(
        help="single (the default): one of everything on 127.0.0.1. cluster: three Consul servers and Kafka nodes, "
        "two of everything else, on 127.0.0.2-4, with its state under var/cluster/ (README: Scaling out). "
        "Also SHOPMESH_TOPOLOGY.",
    ),
]


def _load(topology: Topology | None = None) -> Settings:
    """The settings, in the topology asked for: it is put in the environment, so the process manager and every
    part it starts run in it too."""
    if topology is not None:
        os.environ["SHOPMESH_TOPOLOGY"] = topology.value
    return load()


@app.callback()
def _owner_only() -> None:
    # Whatever the CLI writes under var/ (configuration, Kafka's formatted log folder, the scale file) and every
    # process it starts is readable by its owner only.
    os.umask(UMASK)


def say(message: str) -> None:
    typer.echo(f"[shopmesh] {message}", err=True)


def fail(error: Exception) -> None:
    typer.secho(f"[shopmesh] error: {error}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


def _install(settings: Settings) -> install.Installed:
    try:
        return install.ensure_all(settings)
    except install.InstallError as error:
        fail(error)
        raise  # unreachable: fail exits


def _up(settings: Settings) -> list[Program]:
    installed = _install(settings)
    started = time.monotonic()
    try:
        started_programs = bringup.up(settings, installed, report=say)
    except bringup.StackError as error:
        fail(error)
        raise
    say(f"all {len(started_programs)} parts healthy in {time.monotonic() - started:.0f} s")
    for program in started_programs:
        typer.echo(f"  {program.name:<{NAME_WIDTH}} {program.url}")
    typer.echo(f"  {'logs':<{NAME_WIDTH}} {settings.log_dir}/<part>.log   (shopmesh logs PART)")
    # Everything behind the gateway wants a token: the first curl fetches one of the development users.
    token = f"$({Path(sys.executable).parent / 'shopmesh'} token --user user1)"
    typer.echo(f'Try: curl -s -H "authorization: Bearer {token}" {settings.gateway_url}/v1/products')
    return started_programs


@app.command("install")
def install_command() -> None:
    """Install every component that is missing from the per-user cache, and generate the code of protos/."""
    settings = load()
    installed = _install(settings)
    codegen.generate()
    codegen.write_openapi(installed.openapi / "bin" / "protoc-gen-openapi")
    for name, path in vars(installed).items():
        typer.echo(f"{name:<10} {path}")


@app.command("codegen")
def codegen_command() -> None:
    """Generate the Python gRPC code (shopmesh/<service>/v1/) and Envoy's descriptor set from protos/."""
    root = codegen.generate()
    typer.echo(
        f"generated {', '.join(f'shopmesh/{name}' for name in codegen.generated_packages())} and "
        f"{codegen.DESCRIPTOR_SET.relative_to(root)} from protos/"
    )


@app.command()
def up(topology: TopologyOption = None) -> None:
    """Start the whole mesh in the background and return once every part is healthy."""
    _up(_load(topology))


@app.command()
def run(topology: TopologyOption = None) -> None:
    """Start the whole mesh and stay in the foreground; Ctrl-C stops every part."""
    settings = _load(topology)
    # SIGTERM (from a process manager or `kill`) stops the mesh as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C even when started from a shell's background job, which starts its commands with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    supervisor = Supervisor(settings)
    try:
        _up(settings)
        say("running; press Ctrl-C to stop everything")
        while supervisor.running():
            time.sleep(1)
        say("the process manager stopped")
    except KeyboardInterrupt:
        say("stopping …")
    finally:
        bringup.down(settings)
        say("stopped")


@app.command()
def down(topology: TopologyOption = None) -> None:
    """Stop every part of this checkout's mesh; nothing is left running."""
    settings = _load(topology)
    say("stopping …" if Supervisor(settings).running() else "nothing is running")
    bringup.down(settings)


@app.command()
def status(topology: TopologyOption = None) -> None:
    """Show each part: its process state, its health and its address. Exits 1 unless all are healthy."""
    settings = _load(topology)
    supervisor = Supervisor(settings)
    processes = supervisor.info()
    if not processes:
        typer.echo("shopmesh is not running (start it with `make up` or `make run`)")
        raise typer.Exit(1)
    all_healthy = True
    for program in programs(settings, install.locations(settings)):
        process = processes.get(program.name, {})
        problem = program.probe(settings) if process.get("statename") == "RUNNING" else "not running"
        all_healthy &= problem is None
        verdict = "healthy" if problem is None else f"UNHEALTHY: {problem}"
        typer.echo(
            f"{program.name:<{NAME_WIDTH}} {process.get('statename', 'UNKNOWN'):<9}"
            f" pid {process.get('pid') or '-':<8}"
            f" {verdict:<12} {program.url}"
        )
    raise typer.Exit(0 if all_healthy else 1)


@app.command()
def scale(
    service: Annotated[str, typer.Argument(help="customer-service, inventory-service or billing-service")],
    count: Annotated[int, typer.Argument(metavar="INSTANCES", help="How many instances to run, 1 or more.")],
) -> None:
    """Run SERVICE as INSTANCES processes; each registers in Consul under the same name and takes traffic."""
    settings = load()
    if settings.clustered:
        fail(
            bringup.StackError(
                "the cluster topology runs two instances of each service, one per host; scale the single mesh"
            )
        )
    if not Supervisor(settings).running():
        fail(bringup.StackError("shopmesh is not running: start it with `make up` first"))
    name = service.removesuffix("-service")
    try:
        ports = instances.plan_instances(settings, {name: count})[name]
    except instances.ScaleError as error:
        fail(error)
    _up(settings)
    say(f"{service}: {count} instance(s) on ports {', '.join(map(str, ports))}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def grpcurl(context: typer.Context) -> None:
    """Run the installed grpcurl with the given arguments, e.g. `shopmesh grpcurl -plaintext 127.0.0.1:50051 list`."""
    installed = _install(load())
    sys.exit(subprocess.call([str(installed.grpcurl / "bin" / "grpcurl"), *context.args]))


@app.command()
def token(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Password grant for this user.")] = None,
    password: Annotated[
        str | None, typer.Option(help="Defaults to SHOPMESH_PASSWORD_<USER>, else the dev default.")
    ] = None,
    refresh: Annotated[
        str | None, typer.Option("--refresh", help="Refresh-token grant with this refresh token.")
    ] = None,
    claims: Annotated[bool, typer.Option("--claims", help="Print the access token's claims instead.")] = False,
    full: Annotated[
        bool, typer.Option("--json", help="Print the whole token response (with the refresh token).")
    ] = False,
    topology: TopologyOption = None,
) -> None:
    """Print an access token of the shopmesh realm, by password grant (--user) or refresh-token grant (--refresh)."""
    if bool(user) == bool(refresh):
        fail(typer.BadParameter("give either --user USER or --refresh TOKEN"))
    try:
        answer = realm.token(_load(topology), user, password, refresh)
    except KeycloakError as error:
        message = error.error_message
        message = message.decode(errors="replace") if isinstance(message, bytes) else message
        fail(RuntimeError(f"Keycloak refused the grant: {error.response_code} {message}"))
    if full:
        typer.echo(json.dumps(answer, indent=2))
    elif claims:
        typer.echo(json.dumps(jwt.decode(answer["access_token"], options={"verify_signature": False}), indent=2))
    else:
        typer.echo(answer["access_token"])


@app.command()
def logs(
    part: Annotated[str | None, typer.Argument(help="consul, kafka, customer-service, …; all when left out")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many last lines.")] = 40,
    topology: TopologyOption = None,
) -> None:
    """Print the last lines of a part's log (all parts' logs when no part is named)."""
    settings = _load(topology)
    files = sorted(settings.log_dir.glob(f"{part or '*'}.log"))
    if not files:
        fail(FileNotFoundError(f"no log for {part or 'any part'} under {settings.log_dir}"))
    argv = ["tail", f"-n{lines}", *(["-F"] if follow else []), *map(str, files)]
    sys.exit(subprocess.call(argv))


@app.command()
def provision() -> None:
    """Create the Kafka topics and bring the Keycloak realm in line with keycloak/ (passwords from the
    environment), as the mesh does once Kafka and Keycloak are healthy (used by docker-compose.yml)."""
    settings = load()
    created = invoices.ensure_topics(settings)
    changed = realm.apply(settings)
    typer.echo(f"topics created: {', '.join(created) or 'none'}; realm changes: {', '.join(changed) or 'none'}")


@app.command()
def healthcheck(port: Annotated[int, typer.Argument(help="The gRPC port of a process on this machine.")]) -> None:
    """Exit 0 if the gRPC server on 127.0.0.1:PORT answers grpc.health.v1 with SERVING (a container's check)."""
    if problem := health.grpc_serving(load().model_copy(update={"host": "127.0.0.1"}), port):
        fail(RuntimeError(problem))


@app.command("envoy-bootstrap")
def envoy_bootstrap(
    folder: Annotated[Path, typer.Argument(help="Where to write bootstrap.yaml and the descriptor set it names.")],
) -> None:
    """Render Envoy's bootstrap with the SHOPMESH_* settings, as the mesh starts Envoy (used by docker-compose.yml)."""
    if not codegen.DESCRIPTOR_SET.exists():
        fail(FileNotFoundError(f"no descriptor set at {codegen.DESCRIPTOR_SET}: generate it with `shopmesh install`"))
    typer.echo(gateway.write_bootstrap(load(), folder))


@app.command("watch")
def watch_command(
    windows: Annotated[
        int, typer.Option("--windows", "-w", min=1, help="How many of the latest windows to show.")
    ] = 12,
    once: Annotated[
        bool, typer.Option("--once", help="Print the tables once and exit, instead of refreshing.")
    ] = False,
    topology: TopologyOption = None,
) -> None:
    """Show the dataflows' output topics live: the latest 5-second windows, and each customer's total."""
    settings = _load(topology)
    try:
        shown = watch.watch(settings, watch.View(windows_shown=windows), once=once)
    except KafkaError as error:
        fail(RuntimeError(f"cannot read Kafka at {settings.kafka_bootstrap} ({error}); is the mesh up? (`make up`)"))
    except KeyboardInterrupt:
        return
    Console().print(shown.render())


if __name__ == "__main__":
    app()
