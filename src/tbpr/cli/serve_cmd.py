"""``tbpr serve``: the search service (HTTP API and web page) over a gallery index."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from tbpr.cli.options import add_device_option

log = logging.getLogger(__name__)

API_KEY_ENV = "TBPR_API_KEY"  # the key from the environment does not show in `ps` as --api-key does


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a gallery index over HTTP: search API and web page",
        description="Load the model and the index once, then answer POST /api/search, GET /api/images/{id} "
        "and GET /api/health, and serve a search page at /. OpenAPI docs at /docs. A `tbpr index update` "
        "of the index is picked up between requests, without a restart.",
    )
    p.add_argument("index", type=Path, help="index folder written by `tbpr index build`")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port, 1 to 65535 (default: 8000)")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name clients may reach the server by (the request's Host header, without port), e.g. the "
        "machine's DNS name when serving on 0.0.0.0 (repeatable). Other names get 400, so a web page that "
        "rebinds its domain to this machine cannot read the gallery. Always allowed: localhost, 127.0.0.1, "
        "::1 and the --host address; '*' allows any name",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help=f"require this key on every /api call (default: ${API_KEY_ENV} if set; prefer the "
        "environment variable: a command-line key shows in `ps`)",
    )
    p.add_argument("--run", type=Path, default=None, help="run folder of the model (default: the index's)")
    add_device_option(p, default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from tbpr.search.searcher import Searcher
    from tbpr.search.service import LOOPBACK_HOSTS, bind_socket, create_app, is_loopback

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and api_key is None:
        log.warning(
            "binding to %s without an API key: anyone who can reach this address can search the gallery "
            "and read its images (set %s or --api-key)",
            args.host,
            API_KEY_ENV,
        )
    sock = bind_socket(args.host, args.port)  # a busy or invalid port fails here, before anything loads
    searcher = Searcher(args.index, device=args.device, run=args.run)
    allowed = (
        *LOOPBACK_HOSTS,
        *([args.host] if args.host not in ("0.0.0.0", "::") else []),
        *args.allowed_host,
    )
    log.info(
        "serving %d images on http://%s:%d/ (API key: %s)",
        len(searcher),
        args.host,
        sock.getsockname()[1],
        "required" if api_key else "none",
    )
    level = logging.getLevelName(logging.getLogger("tbpr").getEffectiveLevel()).lower()  # follows -v / -q
    app = create_app(searcher, api_key=api_key, allowed_hosts=allowed)
    with sock:
        uvicorn.Server(uvicorn.Config(app, log_level=level)).run(sockets=[sock])
    return 0
