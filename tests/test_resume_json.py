"""resume_json: what a resumable run (robustness benchmark, defense search) accepts from its results file."""
import json

import pytest

from stochastic_shield._atomic import resume_json
from stochastic_shield.errors import ShieldError

FRESH = {"format_version": 1, "settings": {"eps": [0.1], "limit": 16, "progress": True}, "cells": {}, "clean": {}}


def test_same_fixed_settings_resume_and_missing_tables_come_from_fresh(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"format_version": 1, "settings": {"eps": [0.1], "limit": 16, "progress": False},
                                "cells": {"a": 1}}))
    old = resume_json(path, FRESH, ["eps", "limit"], "drop --resume")  # 'progress' is not a fixed setting
    assert old["cells"] == {"a": 1} and old["clean"] == {}


@pytest.mark.parametrize("text, message", [
    ("{not json", r"is not valid JSON .*"),
    (json.dumps({"format_version": 0, "settings": FRESH["settings"]}), r"has format 0, this version writes 1"),
    (json.dumps({"format_version": 1, "settings": {"eps": [0.05], "limit": 16}}),
     r"cannot resume .*: it was computed with other settings \(eps: \[0\.05\] -> \[0\.1\]\)"),
])
def test_refusals_are_one_line_with_the_way_out(tmp_path, text, message):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(ShieldError, match=message) as err:
        resume_json(path, FRESH, ["eps", "limit"], "delete it")
    assert "\n" not in str(err.value) and "delete it to start over" in str(err.value)
