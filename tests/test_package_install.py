"""The installed package works without the checkout: the wheel carries the contract's JSON
Schemas and the page's static files, and an edge started from a fresh venv serves them.

The wheel is built offline from a copy of the sources (the build leaves nothing in the
checkout) and installed with --no-deps into a new venv whose dependencies come from this
venv's site-packages (a path line, so its editable-install hook is not loaded). The generated
gRPC stubs are not part of the wheel (the image generates them, deploy/Dockerfile), so a copy of
gen/ is put on that venv's path the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import pytest

from services.edge.auth import mint_dev_token
from services.edge.settings import DEV_JWT_SECRET
from tests.support.processes import free_port, spawn, stop_process

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "services", "clients", "schemas")


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv with only the built wheel of docgen in it."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", tmp / "dist", src, cwd=tmp)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("docgen-*.whl")
    # Every Python package of the checkout is in the wheel (setup.py finds them).
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in [*(ROOT / "services").rglob("__init__.py"), ROOT / "clients" / "__init__.py"]:
        assert init.relative_to(ROOT).as_posix() in names, init

    venv = tmp / "venv"
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv,
        cwd=tmp)  # fmt: skip
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp).strip())  # fmt: skip
    shutil.copytree(ROOT / "gen", tmp / "gen", ignore=ignore)
    deps = sysconfig.get_paths()["purelib"]
    (site / "zz_docgen_test_paths.pth").write_text(f"{tmp / 'gen'}\n{deps}\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
        "--no-index", wheel, cwd=tmp)  # fmt: skip
    return python


def outside_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONSAFEPATH"] = "1"  # the working directory is not on sys.path either
    return env


def test_the_wheel_carries_the_schemas_and_the_page(installed: Path) -> None:
    probe = (
        "import json, services.edge.app as app, services.edge.schemas as s;"
        "from importlib.resources import files;"
        "v = s.FrameValidator();"
        "print(json.dumps({'app': app.__file__, 'static': str(app.STATIC_DIR),"
        " 'schemas': str(files(s.SCHEMAS_PACKAGE)), 'client_types': list(v.client_types),"
        " 'page': sorted(p.name for p in app.STATIC_DIR.iterdir())}))"
    )
    done = subprocess.run(
        [installed, "-c", probe], cwd=installed.parents[2], env=outside_env(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    venv = str(installed.parents[1])
    for key in ("app", "static", "schemas"):
        assert found[key].startswith(venv) and str(ROOT) not in found[key], found
    assert "generate" in found["client_types"]
    assert {"index.html", "app.js", "style.css"} <= set(found["page"])


@pytest.mark.timeout(300)
async def test_an_edge_started_from_the_installed_package_serves_page_and_contract(
    installed: Path,
) -> None:
    port = free_port()
    env = {
        **outside_env(),
        "DOCGEN_EDGE_PORT": str(port),
        # Nothing listens there: the page and the frame checks need no generator.
        "DOCGEN_GENERATOR_ADDR": f"127.0.0.1:{free_port()}",
    }
    edge = await spawn(
        str(installed), "-m", "services.edge", cwd=installed.parents[2], env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                try:
                    async with session.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert edge.returncode is None, "the installed edge exited at start"
                await asyncio.sleep(0.1)
            async with session.get(f"{base}/") as response:
                assert response.status == 200
                assert "<html" in (await response.text()).lower()
            async with session.get(f"{base}/static/app.js") as response:
                assert response.status == 200
            token = mint_dev_token("wheel", secret=DEV_JWT_SECRET)
            ws = await session.ws_connect(
                f"{base}/v1/ws", protocols=("docgen.v1", f"bearer.{token}")
            )
            # Answered from the packaged schemas: a generate frame without its outline.
            await ws.send_str(json.dumps({"type": "generate", "request_id": "w1"}))
            while (answer := json.loads((await ws.receive(timeout=30)).data))["type"] != "error":
                pass  # frames the server sends by itself (e.g. `session`) come first
            await ws.close()
        assert answer["type"] == "error" and answer["code"] == "invalid_frame", answer
        assert answer["request_id"] == "w1"
    finally:
        await stop_process(edge)
