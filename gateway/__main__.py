"""The `chat-gateway` command: `serve` the gateway, mint a `token`, or `chat` with one."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

import gateway_client.chat as chat_cli
from gateway.auth.tokens import mint_token
from gateway.config import ConfigError, Settings
from gateway.obs.multiprocess import worker_metrics_folder
from gateway.server.devmode import banner, dev_secret
from gateway.server.options import uvicorn_options
from gateway.store.embedded import EmbeddedRedis, EmbeddedRedisError

DEV_TOKEN_TTL = 24 * 3600


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "chat":
        return chat_cli.main(args)
    try:
        settings = Settings.from_env(os.environ)
        if args.command == "token":
            return _token(settings, args)
        return _serve(settings, args)
    except (ConfigError, EmbeddedRedisError, ValueError, OSError) as exc:
        print(f"chat-gateway: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    token = commands.add_parser("token", help="mint a token with the configured key")
    token.add_argument("--sub", required=True, help="the user id")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--private-key", type=Path, help="PEM key file, for JWT_PUBLIC_KEY setups")
    chat_cli.add_parser(commands)
    return parser


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if settings.dev_mode:
        settings = settings.with_secret(dev_secret(settings.data_dir))
    private_key = args.private_key.read_text() if args.private_key else None
    print(mint_token(settings, args.sub, args.ttl, private_key))
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    embedded = None
    if settings.redis_url is None:
        # Started here, not per worker, so that every worker shares one store.
        embedded = EmbeddedRedis(settings.data_dir)
        os.environ["REDIS_URL"] = embedded.start()
        print(f"chat-gateway: the store is the embedded {embedded.description}", flush=True)
    try:
        if settings.dev_mode:
            dev = settings.with_secret(dev_secret(settings.data_dir))
            host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
            url = f"http://{host}:{args.port}/#token={mint_token(dev, 'dev', DEV_TOKEN_TTL)}"
            print(banner(url), flush=True)
        # Set up before the workers start, so that each one's metrics reach every scrape.
        with worker_metrics_folder(args.workers):
            uvicorn.run(
                "gateway.app:app_from_env",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                **uvicorn_options(settings),
            )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
