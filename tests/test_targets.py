"""Board definitions: built-ins, user TOML files, and clear errors."""
import pytest

from stochastic_shield.errors import ShieldError
from stochastic_shield.targets import all_boards, get_board


def test_builtin_boards_have_valid_tvm_targets():
    boards = all_boards()
    assert {"host", "rasp4b64", "rasp3b", "aarch64"} <= set(boards)
    t = boards["rasp4b64"].tvm_target()
    assert str(t.attrs["mtriple"]) == "aarch64-linux-gnu" and str(t.attrs["mcpu"]) == "cortex-a72"
    assert int(t.attrs["num-cores"]) == 4 and "+neon" in list(t.attrs["mattr"])
    assert boards["rasp4b64"].cross_compiler == "aarch64-linux-gnu-g++"
    assert boards["rasp3b"].cross_compiler == "arm-linux-gnueabihf-g++"
    assert boards["rasp4b64"].rpc_key == "rasp4b64" and boards["host"].cross_compiler is None


def test_user_board_from_toml_without_touching_code(tmp_path, monkeypatch):
    (tmp_path / "jetson.toml").write_text(
        '[jetson]\ndescription = "my board"\ncross_compiler = "aarch64-linux-gnu-g++"\nrpc_key = "jet"\n'
        'target = { kind = "llvm", mtriple = "aarch64-linux-gnu", mcpu = "cortex-a57", num-cores = 4 }\n')
    monkeypatch.setenv("SHIELD_BOARDS", str(tmp_path))
    b = get_board("jetson")
    assert b.rpc_key == "jet" and str(b.tvm_target().attrs["mcpu"]) == "cortex-a57"


@pytest.mark.parametrize("text,match", [
    ("[b]\ntarget = 3\n", "needs target"),
    ("[b]\ncolour = 'red'\ntarget = { kind = 'llvm' }\n", "unknown keys"),
    ("[b\n", "not valid TOML"),
])
def test_bad_board_files_are_rejected_in_one_line(tmp_path, monkeypatch, text, match):
    (tmp_path / "bad.toml").write_text(text)
    monkeypatch.setenv("SHIELD_BOARDS", str(tmp_path))
    with pytest.raises(ShieldError, match=match):
        all_boards()


def test_invalid_target_dict_is_reported_with_board_name(tmp_path, monkeypatch):
    (tmp_path / "x.toml").write_text("[weird]\ntarget = { kind = 'llvm', mattr = '+neon' }\n")
    monkeypatch.setenv("SHIELD_BOARDS", str(tmp_path))
    with pytest.raises(ShieldError, match="board 'weird'.*invalid TVM target"):
        get_board("weird").tvm_target()


def test_unknown_target_lists_known_ones():
    with pytest.raises(ShieldError, match="unknown target 'pi5'.*rasp4b64"):
        get_board("pi5")
