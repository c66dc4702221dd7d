"""TVM's RPC tracker or server, run in this process: ``python tvm_rpc_main.py tracker|server ARGS``.

``python -m tvm.exec.rpc_tracker`` and ``python -m tvm.exec.rpc_server`` import TVM, then start a
PopenWorker, a second Python that imports TVM again and runs the tracker or server there while the
first one only waits. This script calls the function TVM sends to that worker
(``_popen_start_tracker_server`` / ``_popen_start_rpc_server``, TVM 0.27) in its own process
instead: the same TVM code serving the same protocol, one TVM import instead of two (about 4 s less
per program on the host, 7 s under the emulated board's qemu). Nothing of RPC is reimplemented.

It imports only TVM and the standard library, so the emulated board's Python (TVM's runtime, not
this package) runs it as a script too. The arguments are those of TVM's programs that we use.
"""
from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tvm_rpc_main", description=__doc__.splitlines()[0])
    parser.add_argument("program", choices=("tracker", "server"))
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--port-end", type=int, required=True)
    parser.add_argument("--tracker", help="server only: HOST:PORT of the tracker to register with")
    parser.add_argument("--key", default="", help="server only: the key it registers under")
    parser.add_argument("--no-fork", action="store_true", help="server only: spawn a worker per session")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)  # as TVM's programs do: their log lines are what errors quote

    if args.program == "tracker":
        from tvm.rpc import tracker

        tracker._popen_start_tracker_server(args.host, args.port, args.port_end)
        tracker.PopenTrackerServerState.current.thread.join()
        return
    from tvm.rpc import server

    tracker_addr = None
    if args.tracker:
        url, port = args.tracker.rsplit(":", 1)
        tracker_addr = (url, int(port))
    server._popen_start_rpc_server(args.host, args.port, args.port_end, tracker_addr=tracker_addr, key=args.key,
                                   no_fork=args.no_fork)
    server.PopenRPCServerState.current.thread.join()


if __name__ == "__main__":
    main()
