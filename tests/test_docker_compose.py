"""``docker-compose.yml`` and ``example/Dockerfile``, checked without Docker: the file
parses, the services are wired with health checks, and every ``manage.py`` command it
runs exists with the options it is given (resolved by the example site's settings)."""

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

yaml = pytest.importorskip("yaml")

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "example" / "Dockerfile"
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9][A-Za-z0-9._-]*$")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def command_lines(command):
    """The argument lists a service's ``command`` runs, shell loops included."""
    if isinstance(command, str):
        command = shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in re.split(r";|&&|\bdo\b|\bdone\b", command[2])]
    return [command]


def manage_commands(argv_lists):
    """``(name, args)`` for each ``manage.py`` call among the argument lists."""
    found = []
    for argv in argv_lists:
        for index, arg in enumerate(argv):
            if arg.endswith("manage.py") and index + 1 < len(argv):
                found.append((argv[index + 1], argv[index + 2 :]))
    return found


def dockerfile_cmd():
    (line,) = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(line[4:])


def test_services_are_all_there(compose):
    services = compose["services"]
    assert {"postgres", "redis", "mariadb", "web", "worker", "drain"} <= set(services)
    for name, service in services.items():
        image = service.get("image")
        assert image and IMAGE.match(image), f"{name}: image {image!r}"
    for name in ("postgres", "redis", "mariadb", "web"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1


def test_depends_on_waits_for_healthy_services(compose):
    services = compose["services"]
    for name in ("web", "worker", "drain"):
        depends = services[name]["depends_on"]
        assert "postgres" in depends, name
        for other, condition in depends.items():
            assert other in services, f"{name} depends on unknown {other}"
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[other], f"{other} has no health check"
    assert "web" in services["worker"]["depends_on"]  # web applies the migrations


def test_the_example_image_builds_from_files_that_exist(compose):
    build = compose["services"]["web"]["build"]
    context = ROOT / build["context"]
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (context / source).exists(), f"COPY {source}: no such file"


def test_the_worker_and_drain_run_pgjobs(compose):
    services = compose["services"]
    worker = manage_commands(command_lines(services["worker"]["command"]))
    assert worker == [("pgjobs_worker", ["--concurrency", "4"])]
    drain = manage_commands(command_lines(services["drain"]["command"]))
    assert [name for name, _ in drain] == ["pgjobs_drain"]


CHECK_COMMANDS = """
import json, os, sys
sys.path[:0] = ["example", "."]
os.environ["DJANGO_SETTINGS_MODULE"] = "example.settings"
import django
django.setup()
from django.core.management import get_commands, load_command_class
commands = get_commands()
problems = []
for name, args in json.load(sys.stdin):
    if name not in commands:
        problems.append(f"no command {name!r}")
        continue
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    try:
        parser.parse_args(args)
    except BaseException as exc:
        problems.append(f"{name} {args}: {exc}")
print(json.dumps(problems))
"""


def test_every_manage_py_command_exists_with_its_options(compose):
    pytest.importorskip("wagtail", reason="the example site needs the wagtail extra")
    calls = []
    for service in compose["services"].values():
        if "command" in service:
            calls += manage_commands(command_lines(service["command"]))
        check = service.get("healthcheck", {}).get("test", [])
        calls += manage_commands([check[1:]])
    calls += manage_commands([dockerfile_cmd()])
    assert {name for name, _ in calls} == {"serve_demo", "pgjobs_worker", "pgjobs_drain"}
    # The example site's settings decide which commands exist (its demoapp, Wagtail).
    result = subprocess.run(
        [sys.executable, "-c", CHECK_COMMANDS],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
