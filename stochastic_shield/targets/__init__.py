"""Board definitions: each names its TVM target (dict form), cross compiler and default RPC key.

Board strings live only here. Built-in boards are in boards.toml; a user adds a board with a TOML
file of the same form in ~/.config/stochastic-shield/boards/ or in the folder $SHIELD_BOARDS.
"""
from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ShieldError

BUILTIN_FILE = Path(__file__).with_name("boards.toml")
_ALLOWED_KEYS = {"description", "cross_compiler", "rpc_key", "target", "emulator"}


@dataclass(frozen=True)
class Board:
    """A deploy target: TVM target dict, how to link for it, and the RPC key its servers use."""

    name: str
    target: dict
    description: str = ""
    cross_compiler: str | None = None  # None: the host's own compiler
    rpc_key: str = ""
    emulator: str | None = None  # an emulated stand-in exists for this architecture
    source: str = field(default="built-in", compare=False)

    def tvm_target(self):
        """The tvm.target.Target of this board."""
        import tvm

        try:
            return tvm.target.Target(self.target)
        except Exception as e:  # noqa: BLE001 - TVM raises TVMError/ValueError for bad dicts
            raise ShieldError(f"board {self.name!r} ({self.source}) has an invalid TVM target: "
                              f"{str(e).splitlines()[0]}", "targets are dicts like {kind = \"llvm\", mtriple = ...}") from None

    def fcompile(self):
        """The linker to export a library for this board (None: TVM's default host compiler)."""
        if self.cross_compiler is None:
            return None
        if shutil.which(self.cross_compiler) is None:
            pkg = "g++-" + self.cross_compiler.removesuffix("-g++")
            raise ShieldError(f"cross compiler {self.cross_compiler} for board {self.name!r} not found",
                              f"install it with: apt-get install {pkg}")
        import tvm.support.cc  # noqa: F401 - the submodule is not imported by 'import tvm'
        import tvm

        return tvm.support.cc.cross_compiler(self.cross_compiler)

    def describe(self) -> dict:
        """A JSON-ready description."""
        return {"name": self.name, "description": self.description, "target": self.target,
                "cross_compiler": self.cross_compiler, "rpc_key": self.rpc_key,
                "emulator": self.emulator, "source": self.source}


def host_board() -> Board:
    """The machine itself: llvm for the detected CPU, all its cores."""
    import tvm

    target = {"kind": "llvm", "num-cores": os.cpu_count() or 1}
    try:
        cpu = tvm.target.codegen.llvm_get_system_cpu()
        if cpu and cpu != "generic":
            target["mcpu"] = cpu
    except Exception:  # noqa: BLE001 - detection is best effort; plain llvm still works
        pass
    return Board("host", target, "This machine (llvm, detected CPU)", None, "host", None)


def _parse_file(path: Path, source: str) -> dict[str, Board]:
    """Boards defined in one TOML file."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ShieldError(f"board file {path} is not valid TOML: {e}") from None
    boards = {}
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise ShieldError(f"board file {path}: {name!r} must be a table like [{name}]")
        unknown = set(spec) - _ALLOWED_KEYS
        if unknown:
            raise ShieldError(f"board file {path}: board {name!r} has unknown keys {sorted(unknown)}",
                              f"allowed: {', '.join(sorted(_ALLOWED_KEYS))}")
        target = spec.get("target")
        if not isinstance(target, dict) or "kind" not in target:
            raise ShieldError(f"board file {path}: board {name!r} needs target = {{ kind = \"llvm\", ... }}")
        boards[name] = Board(name, dict(target), spec.get("description", ""), spec.get("cross_compiler"),
                             spec.get("rpc_key", name), spec.get("emulator"), source)
    return boards


def user_board_dirs() -> list[Path]:
    """Folders searched for user board files."""
    dirs = [Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "stochastic-shield" / "boards"]
    if os.environ.get("SHIELD_BOARDS"):
        dirs.insert(0, Path(os.environ["SHIELD_BOARDS"]))
    return dirs


def all_boards() -> dict[str, Board]:
    """Every known board: host, built-ins, then user files (which may override built-ins)."""
    boards = {"host": host_board()}
    boards.update(_parse_file(BUILTIN_FILE, "built-in"))
    for d in user_board_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                boards.update(_parse_file(f, str(f)))
    return boards


def get_board(name: str) -> Board:
    """Look up a board by name, with a one-line error listing the known ones."""
    boards = all_boards()
    if name not in boards:
        raise ShieldError(f"unknown target {name!r}",
                          f"known targets: {', '.join(boards)}; add one with a TOML file in {user_board_dirs()[-1]}")
    return boards[name]
