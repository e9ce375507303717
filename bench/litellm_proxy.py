"""LiteLLM's proxy beside the gateway: installed into a virtual environment of its own (never
into the project's), configured to reach the same fake upstream as an OpenAI-compatible
model, with no database, on 127.0.0.1."""

from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.options import Options
from bench.procs import (
    HOST,
    BenchError,
    Workspace,
    base_env,
    free_port,
    http_status,
    tree_rss_kib,
    wait_until,
)
from bench.services import MODEL, UPSTREAM_KEY, UPSTREAM_KEY_ENV, Server

INSTALL_TIMEOUT_S = 900.0
READY_WAIT_S = 180.0  # its first start compiles and imports a great deal
REQUIREMENT = "litellm[proxy]"


@dataclass(frozen=True, slots=True)
class LiteLLM:
    server: Server
    key: str
    version: str


def ensure_installed(venv: Path) -> Path:
    """The `litellm` command in `venv`, made (python -m venv, pip install) when missing."""
    command = venv / "bin" / "litellm"
    if command.exists():
        return command
    print(f"installing {REQUIREMENT} into {venv} ...", file=sys.stderr, flush=True)
    _run([sys.executable, "-m", "venv", str(venv)], 120)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, REQUIREMENT], INSTALL_TIMEOUT_S)
    if not command.exists():
        raise BenchError(f"pip installed {REQUIREMENT} but {command} is missing")
    return command


def _run(argv: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(argv[:4])} ...` took over {timeout:.0f} s") from None
    except OSError as exc:
        raise BenchError(f"`{argv[0]}` could not run: {exc}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BenchError(f"`{' '.join(argv[:4])} ...` failed ({done.returncode}):\n{tail}")


def version(venv: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        out = subprocess.run(
            [str(venv / "bin/python"), "-c", code], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def proxy_config(opts: Options, upstream_port: int, key: str) -> str:
    """YAML, written by hand: the proxy's own format, with only these few keys."""
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{opts.upstream_model}\n"
        f"      api_base: http://{HOST}:{upstream_port}/v1\n"
        f"      api_key: os.environ/{UPSTREAM_KEY_ENV}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "general_settings:\n"
        f"  master_key: {key}\n"
    )


def start_litellm(opts: Options, work: Workspace, upstream_port: int) -> LiteLLM:
    command = ensure_installed(opts.litellm_venv)
    key = f"sk-{secrets.token_urlsafe(24)}"
    config = work.tmp / "litellm.yaml"
    config.write_text(proxy_config(opts, upstream_port, key))
    port = free_port()
    argv = [str(command), "--config", str(config), "--host", HOST, "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = base_env(
        LITELLM_LOG="ERROR",
        # The model cost map is otherwise fetched from the internet at start-up.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        DISABLE_ADMIN_UI="True",
        **{UPSTREAM_KEY_ENV: UPSTREAM_KEY},
    )
    child = work.spawn("litellm", argv, env)
    ready = wait_until(child, lambda: http_status(port, "/health/liveliness") == 200, READY_WAIT_S)
    server = Server(child, port, ready, tree_rss_kib(child.pid))
    return LiteLLM(server, key, version(opts.litellm_venv))
