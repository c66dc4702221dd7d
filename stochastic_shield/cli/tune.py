"""`shield tune` and `shield schedules ...`: parse arguments, call the typed functions, print."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ShieldError
from .common import add_json, add_model, add_precision, add_quantization, model_source, print_json


def register(subparsers) -> None:
    """Add the 'tune' and 'schedules' subcommands to the shield CLI's subparsers."""
    from ..schedules.tune import TuneArgs

    d = TuneArgs()
    p = subparsers.add_parser(
        "tune", help="tune a model's kernels for a board with MetaSchedule (resumable)",
        description="Tune the kernels of a model for a board with MetaSchedule (XGBoost cost model), measuring "
                    "candidates on the boards registered under KEY at a tracker (several boards measure in "
                    "parallel), and append the results to the model's schedule database. Rerunning the same "
                    "command continues: records already in the database count toward --trials. Ctrl-C stops "
                    "after the current round.")
    add_model(p)
    p.add_argument("--target", default=d.target, help=f"board name, see 'shield targets' (default {d.target})")
    p.add_argument("--tracker", metavar="HOST:PORT",
                   help="RPC tracker of the boards (required except for --target host, measured on this machine)")
    p.add_argument("--key", help="tracker key of the boards (default: the board's rpc_key)")
    p.add_argument("--trials", type=int, default=d.trials, help="measured candidates for the whole model, "
                                                               f"including those already in the database (default {d.trials})")
    add_precision(p, "tune")
    p.add_argument("--db", type=Path, help="database folder (default: 'shield schedules path' of the model)")
    p.add_argument("--task", action="append", default=[], metavar="NAME",
                   help="tune only tasks whose name contains NAME (repeatable)")
    p.add_argument("--max-trials-per-task", type=int, metavar="N", help="cap per task (default: none)")
    p.add_argument("--trials-per-round", type=int, metavar="N",
                   help="candidates per round (default: the budget spread over the tasks, 2..32)")
    p.add_argument("--batch", type=int, default=d.batch, help=f"static batch size, as for compile (default {d.batch})")
    p.add_argument("--shield", metavar="CONFIG", help="tune the shielded model, as compile --shield (its batch-T "
                                                      "dense and dropout kernels); shares the model's database")
    add_quantization(p, "int8 quantization (as for compile)")
    m = p.add_argument_group("building and measuring")
    m.add_argument("--builder-timeout", type=float, default=d.builder_timeout, metavar="S",
                   help=f"seconds per candidate build (default {d.builder_timeout:g})")
    m.add_argument("--runner-workers", type=int, metavar="N",
                   help="parallel measurements (default: number of boards under the key)")
    m.add_argument("--session-timeout", type=float, default=d.session_timeout, metavar="S",
                   help=f"seconds a board keeps one measurement session (default {d.session_timeout:g})")
    m.add_argument("--queue-timeout", type=float, default=d.queue_timeout, metavar="S",
                   help=f"seconds to wait for a free board before a measurement fails (default {d.queue_timeout:g})")
    p.add_argument("--minutes", type=float, metavar="M",
                   help="start no round after M minutes (rounds under way finish, then the check), "
                        "whatever trials are left; a rerun continues")
    m.add_argument("--seed", type=int, help="random seed of the search")
    m.add_argument("--no-check", action="store_true",
                   help="skip the final check (the model built tuned and with the default schedules, timed "
                        "on the board; compile applies the database only if tuned was not slower)")
    add_json(p, "print the summary as JSON")
    p.set_defaults(func=cmd_tune)

    p = subparsers.add_parser(
        "schedules", help="inspect, merge and locate tuning databases",
        description="Tuning databases are MetaSchedule JSON folders, one per (board, model, precision), that "
                    "'shield tune' writes and 'shield compile' applies.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("show", help="tasks, trials and best latencies in a database")
    s.add_argument("db", type=Path, help="database folder")
    add_json(s)
    s = sub.add_parser("merge", help="add the records of databases to another (duplicates kept once)")
    s.add_argument("dst", type=Path, help="database folder to merge into (created if needed)")
    s.add_argument("srcs", type=Path, nargs="+", metavar="SRC", help="database folders to merge from")
    s.add_argument("--allow-mixed-targets", action="store_true",
                   help="merge even if the databases were tuned for different targets")
    add_json(s)
    s = sub.add_parser("path", help="the database folder tune writes and compile applies for a model and board")
    add_model(s)
    s.add_argument("--target", default=d.target, help=f"board name (default {d.target})")
    add_precision(s, "locate the database of")
    add_json(s)
    s = sub.add_parser("repair", help="drop the lines of a database that do not parse (e.g. cut short by a kill)")
    s.add_argument("db", type=Path, help="database folder")
    add_json(s)
    p.set_defaults(func=cmd_schedules)


# ---------------------------------------------------------------- commands
def tune_args(args):
    """The TuneArgs of parsed 'shield tune' arguments."""
    from ..schedules.tune import TuneArgs

    return TuneArgs(
        checkpoint=model_source(args), target=args.target, tracker=args.tracker, key=args.key, trials=args.trials,
        minutes=args.minutes, int8=args.precision == "int8", db=args.db, max_trials_per_task=args.max_trials_per_task,
        num_trials_per_iter=args.trials_per_round, tasks=tuple(args.task), batch=args.batch, calib=args.calib,
        observer=args.observer, allow_fp32=args.allow_fp32, data_root=args.data_root, shield=args.shield,
        calib_data=args.calib_data,
        builder_timeout=args.builder_timeout, runner_workers=args.runner_workers,
        session_timeout=args.session_timeout, queue_timeout=args.queue_timeout, seed=args.seed,
        check=not args.no_check, progress=not args.json)


def cmd_tune(args) -> None:
    from ..schedules.tune import tune

    res = tune(tune_args(args))
    if args.json:
        print_json(res)
    else:
        _print_tune(res)
    if res["status"] == "interrupted":
        raise KeyboardInterrupt
    if res["status"] == "stopped":
        raise ShieldError(f"tuning stopped: {res['reason']}; {res['trials_after']} measured schedules are kept "
                          f"in {res['database']}", "rerun the same command to continue when boards are back")


def cmd_schedules(args) -> None:
    from ..schedules import database as dbm

    if args.action == "show":
        res = dbm.show(args.db)
        print_json(res) if args.json else _print_show(res)
    elif args.action == "merge":
        res = dbm.merge(args.dst, *args.srcs, allow_mixed_targets=args.allow_mixed_targets)
        if args.json:
            print_json(res)
        else:
            print(f"{res['path']}: {res['added']} records added, {res['duplicates']} duplicates skipped; "
                  f"now {res['records']} records of {res['workloads']} workloads")
    elif args.action == "path":
        from ..schedules.locate import locate_database

        res = locate_database(model_source(args), args.target, args.precision)
        if args.json:
            print_json(res)
        else:
            print(res["path"])
            if not res["has_records"]:
                print(f"(no records yet{'; compile applies the shipped ' + res['shipped'] if res['shipped'] else ''})",
                      file=sys.stderr)
    elif args.action == "repair":
        res = dbm.repair(args.db)
        if args.json:
            print_json(res)
        else:
            for d in res["dropped"]:
                print(f"dropped {d['file']} line {d['line']}: {d['problem']}")
            print(f"{res['path']}: {len(res['dropped'])} broken lines dropped; "
                  f"{res['records']} records of {res['workloads']} workloads kept")


# ---------------------------------------------------------------- printing
def _ms(v) -> str:
    return f"{v:.4g}" if v is not None else "-"


def _print_tune(res: dict) -> None:
    print(f"{'task':58s} {'trials':>11s} {'failed':>6s} {'best ms (before -> now)':>24s}")
    for t in res["tasks"]:
        trials = f"{t['trials_before']}->{t['trials']}"
        print(f"{_clip(t['task'], 58):58s} {trials:>11s} {t['failed'] - t['failed_before']:>6d} "
              f"{_ms(t['best_ms_before']):>11s} -> {_ms(t['best_ms']):<10s}")
    for addr, b in res.get("boards", {}).items():
        err = f"  e.g. {b['errors'][0]}" if b["errors"] else ""
        print(f"board {addr}: {b['measured']} measured, {b['failed']} failed{err}")
    print(f"{res['status']}: {res['trials_after']} of {res['budget']} trials in {res['database']} "
          f"({res['measured']} this run, {res['failed']} failed, {res['elapsed_s']:.0f} s)")
    if res.get("check"):
        c = res["check"]
        d = c.get("decision") or {}
        ratio = (f" (tuned/default {d['ratio_median']:.3f}, at most {d['ratio_upper_bound'] or float('inf'):.3f} "
                 f"at {d['confidence']:.0%})") if d else ""
        print(f"check ({c['key']}): tuned {c['tuned_ms']:.4g} ms, default {c['default_ms']:.4g} ms on {c['where']}{ratio}: "
              + ("compile applies the tuned schedules" if c["apply"] else
                 f"compile keeps the default schedules (the tuned build is not surely "
                 f"{d.get('margin', 0):.0%} faster)"))
    if res["status"] in ("done", "budget reached", "time limit"):
        flag = " --fp32" if res["precision"] == "fp32" else ""
        print(f"apply it: shield compile --target {res['target']}{flag} --db {res['database']} -o DIR")


def _print_show(res: dict) -> None:
    print(f"{res['path']}  ({', '.join(res['targets']) or 'no records'})")
    print(f"{'task':58s} {'trials':>6s} {'failed':>6s} {'best ms':>10s}")
    for t in res["tasks"]:
        print(f"{_clip(t['task'], 58):58s} {t['trials']:>6d} {t['failed']:>6d} {_ms(t['best_ms']):>10s}")
    tot = res["totals"]
    print(f"{tot['workloads']} workloads ({tot['tuned_workloads']} tuned), {tot['trials']} records "
          f"({tot['failed']} failed); tuned kernels total {_ms(tot['best_total_ms'])} ms")


def _clip(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
