"""`shield boards`: start, stop and list the local boards (tracker, host server, emulated aarch64)."""
from __future__ import annotations

import sys

from ..defaults import EMULATED_PORT, HOST_PORT, RPC_BIND_HOST, TRACKER_PORT
from .common import add_json, print_json


def register(sub) -> None:
    """Add 'boards' to the shield CLI's subparsers."""
    p = sub.add_parser("boards", help="start, stop and list local boards (tracker, host server, emulated aarch64)",
                       description="Local boards for development and tests, on 127.0.0.1 unless --host: a TVM RPC tracker, "
                                   "a host RPC server (key 'host') and an emulated aarch64 board (key 'rasp4b64').")
    p.add_argument("action", choices=["up", "down", "status", "build-emulated"])
    p.add_argument("--emulated", action="store_true", help="with 'up': also start the emulated aarch64 board")
    p.add_argument("--no-host", action="store_true", help="with 'up': no host RPC server")
    p.add_argument("--host", default=RPC_BIND_HOST, metavar="ADDRESS",
                   help=f"with 'up': the address every program listens on (default {RPC_BIND_HOST}; another one lets "
                        "whoever reaches it run code here: TVM's RPC has no authentication, see docs/SECURITY.md)")
    p.add_argument("--tracker-port", type=int, default=TRACKER_PORT, help=f"(default {TRACKER_PORT})")
    p.add_argument("--host-port", type=int, default=HOST_PORT, help=f"(default {HOST_PORT})")
    p.add_argument("--emulated-port", type=int, default=EMULATED_PORT, help=f"(default {EMULATED_PORT})")
    p.add_argument("--force", action="store_true", help="with 'build-emulated': rebuild from scratch")
    add_json(p)
    p.set_defaults(func=cmd_boards)


def cmd_boards(args) -> None:
    from ..runtime_py import boards

    if args.action == "up":
        from ..runtime_py.servers import exposure_warning

        warning = exposure_warning(args.host)
        if warning:
            print(warning, file=sys.stderr, flush=True)  # before anything listens
        procs = boards.up(tracker_port=args.tracker_port, host_server=not args.no_host, host_port=args.host_port,
                          emulated=args.emulated, emulated_port=args.emulated_port, host=args.host)
        if args.json:
            print_json([p.__dict__ for p in procs])
        else:
            for p in procs:
                print(f"{p.name}: {p.kind} pid {p.pid} on {p.host}:{p.port}" + (f" key {p.key}" if p.key else ""))
            print(f"tracker: {args.host}:{args.tracker_port}; stop all with 'shield boards down'")
    elif args.action == "down":
        names = boards.down()
        print("stopped: " + (", ".join(names) if names else "nothing was running"))
    elif args.action == "status":
        print_json(boards.status())  # the same JSON with or without --json
    elif args.action == "build-emulated":
        from ..runtime_py.emulated import build_emulated_board

        print(build_emulated_board(force=args.force))
