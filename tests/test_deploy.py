"""The production image and compose file stay consistent with the code (no Docker engine here): the
install script path and variables the Dockerfile uses, the commands it runs, the settings its and
compose's environment name, the health check URL against the running service, a non-root user."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.main import get_command

from cim.cli import app as cli_app
from cim.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV (.*?)(?<!\\)$", DOCKERFILE, re.M | re.S):
        for name, value in re.findall(r"(\w+)=(\S*)", block):
            env[name] = value
    return env


def settings_path_exists(var: str) -> bool:
    """CIM_LIMITS__POOL_SIZE → Settings.limits.pool_size exists."""
    model: type = Settings
    for part in var.removeprefix("CIM_").lower().split("__"):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_dockerfile_uses_the_install_script_as_documented():
    assert re.search(r"^RUN bash scripts/install.sh", DOCKERFILE, re.M)
    script = (ROOT / "scripts/install.sh").read_text()
    env = dockerfile_env()
    for var in ("CIM_VENV", "CIM_EXTRAS", "CIM_WITH_POSTGRES_SERVER", "CIM_PYTHON"):
        assert var in env, var
        assert var in script or var in (ROOT / "scripts/python.sh").read_text(), f"install.sh ignores {var}"
    assert env["CIM_WITH_POSTGRES_SERVER"] == "0" and env["CIM_EXTRAS"] == ""
    assert f'{env["CIM_VENV"]}/bin' in env["PATH"]


def test_dockerfile_runs_as_a_user_with_existing_commands_and_settings():
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd .*\b{users[-1]}\b", DOCKERFILE)
    cmd = re.search(r"^CMD (.*)$", DOCKERFILE, re.M).group(1)
    group = get_command(cli_app)
    for invocation in re.findall(r"cim ([a-z]+(?: [a-z]+)?)", cmd):
        words = invocation.split()
        command = group.commands.get(words[0])
        assert command is not None, invocation
        if len(words) > 1:
            assert words[1] in command.commands, invocation
    for var in dockerfile_env():
        if var.startswith("CIM_") and var not in ("CIM_VENV", "CIM_EXTRAS", "CIM_WITH_POSTGRES_SERVER", "CIM_PYTHON"):
            assert settings_path_exists(var), f"Dockerfile sets {var}, which no setting reads"


def test_compose_names_real_settings_and_the_image():
    compose = yaml.safe_load((ROOT / "compose.yml").read_text())
    service = compose["services"]["cim"]
    assert service["build"] == "."
    assert "postgis" in service["depends_on"]
    for var in service["environment"]:
        assert settings_path_exists(var), f"compose sets {var}, which no setting reads"
    assert service["environment"]["CIM_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_healthcheck_url_answers(http):
    path = re.search(r"HEALTHCHECK .*?http://127\.0\.0\.1:\d+(/\w+)", DOCKERFILE, re.S).group(1)
    assert http.get(path).status_code == 200
