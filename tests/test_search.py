"""`shield search`: the Pareto front and the budgets on hand-made points, a tiny search end to end on real
compiled artifacts (valid front, budgets respected, resumed without recomputing), one-line errors."""
import json

import pytest

from stochastic_shield.cli import build_parser, main
from stochastic_shield.errors import ShieldError
from stochastic_shield.search import (RESULTS, Pair, SearchArgs, best, dominates, finalists, finalists_per_budget,
                                      make_space, pareto, pareto_2d, run_search, score)
from stochastic_shield.search.screen import points

PNG = b"\x89PNG\r\n\x1a\n"


def _pt(name, clean, *robust, T=1):
    return {"pair": name, "filter": name, "dropout": "none", "T": T, "clean": clean,
            "robust": {f"e{i}": r for i, r in enumerate(robust)}}


POINTS = [_pt("a", 0.95, 0.70, 0.20), _pt("b", 0.94, 0.80, 0.50), _pt("c", 0.94, 0.79, 0.50),
          _pt("d", 0.93, 0.78, 0.60), _pt("e", 0.90, 0.60, 0.40), _pt("f", 0.80, 0.90, 0.70),
          _pt("d", 0.93, 0.78, 0.60, T=8)]


def _check_front(front, pts):
    """No point on FRONT is dominated by any point; every point off it is dominated by one on it."""
    for p in front:
        assert not any(dominates(q, p) for q in pts), p["pair"]
    for p in pts:
        if p not in front:
            assert any(dominates(q, p) for q in front), p["pair"]


def test_pareto_front_keeps_exactly_the_non_dominated_points():
    front = pareto(POINTS)
    assert {p["pair"] for p in front} == {"a", "b", "d", "f"} and sum(p["pair"] == "d" for p in front) == 2
    _check_front(front, POINTS)
    assert [p["clean"] for p in front] == sorted((p["clean"] for p in front), reverse=True)
    # one eps at a time (e0): a (cleanest), b (0.80 at 0.94) and f (0.90 at 0.80); c, d, e are beaten
    assert [p["pair"] for p in pareto_2d(POINTS, "e0")] == ["f", "b", "a"]


def test_best_per_budget_respects_the_budget_and_prefers_fewer_passes():
    base = 0.95
    assert best(POINTS, base, 1.0)["pair"] == "b"          # d is 2 points down: out of a 1-point budget
    pick = best(POINTS, base, 2.0)
    assert pick["pair"] == "d" and pick["T"] == 1           # d at T=1 and T=8 tie: the cheaper one
    assert best(POINTS, 0.99, 0.5) is None
    for b in (1.0, 2.0, 5.0, 20.0):
        p = best(POINTS, base, b)
        assert p["clean"] >= base - b / 100 - 1e-12
        assert all(score(q) <= score(p) for q in POINTS if q["clean"] >= base - b / 100 - 1e-12)


def test_finalists_are_within_budget_plus_slack_and_not_beaten_by_the_margin():
    got = finalists(POINTS, 0.95, 2.0, 1.0, 0.03, 10)
    assert "f" not in got and "e" not in got               # 15 points down; e dominated by b
    assert "c" not in got or "b" in got
    assert finalists(POINTS, 0.95, 2.0, 1.0, 0.0, 10) == ["d", "b", "a"]
    assert finalists(POINTS, 0.95, 2.0, 1.0, 0.0, 1) == ["d"]
    # with a margin, c (beaten by 1 point only) survives as a finalist
    assert "c" in finalists(POINTS, 0.95, 2.0, 1.0, 0.03, 10)


def test_finalists_per_budget_give_the_tight_budget_its_own_candidates():
    assert finalists(POINTS, 0.95, 2.0, 0.0, 0.0, 1) == ["d"]       # by score alone: 2 points down takes the place
    assert finalists_per_budget(POINTS, 0.95, (2.0, 1.0), 0.0, 0.0, 1) == ["b"]
    assert finalists_per_budget(POINTS, 0.95, (1.0, 2.0), 0.0, 0.0, 3) == ["b", "d", "a"]
    assert finalists_per_budget(POINTS, 0.95, (1.0, 2.0), 0.0, 0.0, 3, exclude=("b",)) == ["a", "d"]


def test_space_is_canonical_and_starts_with_plain_int8():
    pairs = make_space(["none", "bits:3", " bits:3 "], ["none", "model:0.3", "pool1:0.1+model:0.3"])
    assert pairs[0] == Pair() and len(pairs) == 6 and len(set(pairs)) == 6
    assert Pair("bits:3", "pool1:0.1+model:0.3").shield((1, 8)).dropout[0].after == "pool1"
    assert Pair().shield((1,)) is None and Pair("bits:3").config_name() == "int8+filter"


TINY = dict(limit=12, screen_images=6, clean_images=24, filters=("none", "bits:3"), dropouts=("none", "model:0.3"), T=(1, 2),
            screen_attacks=("apgd-ce2", "levels2"), screen_eot=2, attacks=("fgsm", "apgd-ce2", "levels2"),
            eot_samples=2, budgets=(1.0, 2.0), eps=(0.05, 0.1), calib=64, batch=12, threads=1, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fashion_root):
    args = SearchArgs(data_root=str(fashion_root), out=tmp_path_factory.mktemp("search"), **TINY)
    return args, run_search(args)


def test_tiny_search_runs_end_to_end_with_a_valid_front(tiny):
    args, res = tiny
    assert set(res["screen"]) == {p.key for p in make_space(TINY["filters"], TINY["dropouts"])}
    assert Pair().key in res["final"] and res["incumbent"] in res["final"]
    final = [pt for k, e in res["final"].items() for pt in points(e, k, "final")]
    _check_front(res["front"], final)
    assert len(final) == len({(p["pair"], p["T"]) for p in final})
    base = res["baseline"]["clean"]
    for b, pt in res["best"].items():
        assert pt is None or pt["clean"] >= base - float(b) / 100 - 1e-12
    for e in res["screen"].values():                  # finalists chosen on the clean images too (replica)
        assert e["clean_images"] == 24 and set(e["clean_limit"]) == set(e["clean"]) and e["images"] == 12
    for e in res["final"].values():
        assert e["clean_images"] == 24 and set(e["clean_limit"]) == set(e["clean"])  # the budgets on 24 images
        assert set(e["robust"]) == {"0.05", "0.1"} and all(0 <= v <= c for t, v in e["robust"]["0.05"].items()
                                                           for c in [e["clean_limit"][t]])
        assert e["T"] == ([1, 2] if e["dropout"] != "none" else [1])
    assert (args.out / "search.md").read_text().startswith("# Defense search")
    assert (args.out / "search_front.png").read_bytes()[:8] == PNG
    assert json.loads((args.out / RESULTS).read_text())["front"] == res["front"]


def test_rerun_resumes_without_recomputing_finished_pairs(tiny):
    args, res = tiny
    again = run_search(args)
    assert again["run"]["screened"] == 0 and again["run"]["evaluated"] == 0
    assert again["run"]["screen_skipped"] == 4 and again["run"]["final_skipped"] == len(res["final"])
    assert again["screen"] == res["screen"] and again["final"] == res["final"]
    # a finished pair is stored as soon as it is done: drop one, and only that one is recomputed
    data = json.loads((args.out / RESULTS).read_text())
    gone = next(k for k in data["screen"] if k != Pair().key)
    del data["screen"][gone]
    (args.out / RESULTS).write_text(json.dumps(data))
    third = run_search(args)
    assert third["run"]["screened"] == 1 and third["run"]["screen_skipped"] == 3 and gone in third["screen"]
    other = SearchArgs(**{**args.__dict__, "screen_eot": 3})
    with pytest.raises(ShieldError, match=r"cannot resume .*screen_eot: 2 -> 3"):
        run_search(other)


def test_budgets_count_on_the_clean_images_and_follow_their_setting(tiny):
    args, res = tiny
    assert res["baseline"]["clean"] == res["final"][Pair().key]["clean"]["1"]    # the 24-image accuracy
    few = run_search(SearchArgs(**{**args.__dict__, "clean_images": 0}))         # back to the 12 attacked images
    for k, e in few["final"].items():
        assert "clean_images" not in e and e["clean"] == res["final"][k]["clean_limit"]
        assert e["clean_interval"] == res["final"][k]["clean_limit_interval"]
    assert all(e["clean"] == res["screen"][k]["clean_limit"] and "clean_images" not in e
               for k, e in few["screen"].items())
    again = run_search(args)                                                       # measured again on 24
    assert again["final"] == {k: dict(e, clean_check_s=again["final"][k]["clean_check_s"])
                              for k, e in res["final"].items()}


@pytest.mark.parametrize("argv, message", [
    (["--budgets", "0"], "budgets must be points in (0, 100)"),
    (["--eps", "0"], "eps must hold budgets in (0, 1]"),
    (["--limit", "10", "--screen-images", "20"], "screen-images (20) cannot exceed limit (10)"),
    (["--filters", "bits:9"], "bit depth bits=9 is out of range"),
    (["--dropouts", "model:1.5"], "dropout rate for 'model' must be in [0, 1)"),
    (["--attacks", "seed-apgd-ce"], "attack 'seed-apgd-ce' knows the board's seed"),
    (["--screen-attacks", "fgsm"], "screening attacks must be adaptive ones"),
    (["--final-max", "0"], "final-max must be at least 1"),
])
def test_bad_arguments_fail_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    def work(*_):
        raise AssertionError("the arguments passed the checks")  # fail at once rather than run a whole search

    monkeypatch.setattr("stochastic_shield.search.run.screen_pair", work)
    assert main(["search", *argv, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shield search: error: ") and message in err and "\n" not in err


def test_cli_defaults_are_the_typed_defaults():
    from stochastic_shield.cli.search import search_args

    assert search_args(build_parser().parse_args(["search"])) == SearchArgs()
