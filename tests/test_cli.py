"""The `shield` command line: help, listing, compile/run/eval end to end, and one-line errors (exit 2)."""
import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest


def shield(*args, env=None, check=False):
    """Run the real console entry point in a fresh interpreter."""
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "stochastic_shield", *map(str, args)], capture_output=True, text=True,
                       env=e, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def _one_line_error(p, match):
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr  # no stack trace
    assert match in lines[0], lines[0]


def _subcommands(parser, path=()):
    """(words, parser) of every subcommand registered in PARSER, nested ones (bench latency, ...) included."""
    for action in parser._actions:  # argparse keeps its subcommands in private fields only
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def _listed_commands(help_text: str) -> list[str]:
    """The command names a help text lists under 'positional arguments' (4-space indented words)."""
    section = help_text.split("positional arguments:", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\S+)", section, flags=re.M)


def test_help_explains_every_subcommand(capsys):
    from stochastic_shield.cli import build_parser, main

    parser = build_parser()
    commands = dict(_subcommands(parser))
    top = [words[0] for words in commands if len(words) == 1]
    assert {"train", "compile", "targets", "run", "eval", "boards", "bench", "tune", "schedules", "demo"} <= set(top)
    # the console entry's help lists every registered command, in order (one without help= is left out)
    assert _listed_commands(shield("--help", check=True).stdout) == top
    for words, sub in commands.items():
        with pytest.raises(SystemExit) as done:
            main([*words, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0, words
        assert out.startswith(f"usage: shield {' '.join(words)} "), (words, out[:80])
        nested = [w[-1] for w in commands if w[:-1] == words]
        if nested:  # 'shield bench --help' lists latency and robustness, and so on
            assert _listed_commands(out) == nested, words
    assert "--rpc" in shield("eval", "--help", check=True).stdout


def test_console_script_is_the_cli_main():
    import importlib

    from stochastic_shield.cli import main

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["shield"].partition(":")
    assert getattr(importlib.import_module(module), func) is main


def test_targets_json_lists_boards():
    boards = {b["name"]: b for b in json.loads(shield("targets", "--json", check=True).stdout)}
    assert boards["rasp4b64"]["target"]["mcpu"] == "cortex-a72"


def test_compile_run_eval_from_the_command_line(tmp_path, fashion_root):
    art = tmp_path / "art"
    m = json.loads(shield("compile", "--target", "host", "-o", art, "--batch", "4", "--json", check=True).stdout)
    assert m["input"]["shape"] == [4, 1, 28, 28]
    env = {"SHIELD_FASHION_MNIST": str(fashion_root)}
    run = json.loads(shield("run", art, "--count", "3", "--json", env=env, check=True).stdout)
    assert [r["input"] for r in run["predictions"]] == ["test[0]", "test[1]", "test[2]"]
    assert run["predictions"][0]["label"] == "Ankle boot"  # the first test image, classified right
    ev = json.loads(shield("eval", art, "--limit", "100", "--json", env=env, check=True).stdout)
    assert ev["images"] == 100 and ev["accuracy"] >= 0.85
    text = shield("eval", art, "--limit", "20", env=env, check=True).stdout
    assert "top-1 accuracy" in text


def test_run_on_image_files(tmp_path, fashion_test):
    from PIL import Image

    art = tmp_path / "art"
    shield("compile", "-o", art, check=True)
    Image.fromarray(fashion_test.images[0, 0]).save(tmp_path / "boot.png")
    Image.fromarray(fashion_test.images[1, 0]).resize((56, 56)).convert("RGB").save(tmp_path / "big.png")
    out = json.loads(shield("run", art, "--images", tmp_path / "boot.png", tmp_path / "big.png", "--json",
                            check=True).stdout)
    assert out["predictions"][0]["label"] == "Ankle boot"
    assert out["predictions"][1]["class"] == int(fashion_test.labels[1])


def test_bad_inputs_give_one_line_errors(tmp_path):
    _one_line_error(shield("compile", tmp_path / "missing.pt", "-o", tmp_path / "a"), "checkpoint")
    _one_line_error(shield("compile", "--target", "pi9", "-o", tmp_path / "a"), "unknown target 'pi9'")
    _one_line_error(shield("eval", tmp_path / "nothing"), "artifact folder")
    _one_line_error(shield("run", tmp_path, "--rpc", "127.0.0.1:9"), "has no manifest.json")


@pytest.fixture(scope="module")
def cli_artifact(tmp_path_factory):
    art = tmp_path_factory.mktemp("cli") / "art"
    shield("compile", "-o", art, check=True)
    return art


def test_unreachable_rpc_and_missing_dataset(cli_artifact, tmp_path):
    _one_line_error(shield("eval", cli_artifact, "--rpc", "127.0.0.1:9", "--key", "host"), "cannot reach the RPC tracker")
    _one_line_error(shield("eval", cli_artifact, env={"SHIELD_FASHION_MNIST": str(tmp_path)}),
                    "apt-get install dataset-fashion-mnist")
    _one_line_error(shield("run", cli_artifact, "--images", tmp_path / "no.png"), "cannot read image")


def test_normal_commands_print_no_library_warnings(tmp_path, fashion_root):
    """Library warnings about their own internals (torch's LeafSpec FutureWarning on every compile) stay
    off the user's terminal."""
    art = tmp_path / "int8"
    for args in (("targets",), ("compile", "--int8", "--calib", "64", "--data-root", fashion_root, "-o", art, "--json"),
                 ("run", art, "--count", "2", "--data-root", fashion_root)):
        p = shield(*args, check=True)
        assert "Warning" not in p.stderr, (args, p.stderr)


def test_cli_defaults_are_those_of_the_typed_functions():
    """A command given no options calls its typed function with that function's own defaults."""
    from stochastic_shield.bench.latency import LatencyArgs
    from stochastic_shield.bench.robustness import RobustnessArgs
    from stochastic_shield.cli import build_parser
    from stochastic_shield.cli.bench import latency_args, robustness_args
    from stochastic_shield.cli.compile import compile_args
    from stochastic_shield.cli.demo import demo_args
    from stochastic_shield.cli.run import eval_args, run_args
    from stochastic_shield.cli.tune import tune_args
    from stochastic_shield.compile.build import CompileArgs
    from stochastic_shield.demo import DemoArgs
    from stochastic_shield.runtime_py.predict import EvalArgs, RunArgs
    from stochastic_shield.schedules import TuneArgs

    parse, art = build_parser().parse_args, Path("art")
    assert compile_args(parse(["compile", "-o", "art"])) == CompileArgs(None, out=art, progress=True)
    assert run_args(parse(["run", "art"])) == RunArgs(art)
    assert eval_args(parse(["eval", "art"])) == EvalArgs(art)
    assert latency_args(parse(["bench", "latency", "art"])) == LatencyArgs(art)
    assert robustness_args(parse(["bench", "robustness"])) == RobustnessArgs()
    assert tune_args(parse(["tune"])) == TuneArgs()
    assert demo_args(parse(["demo"])) == DemoArgs()
