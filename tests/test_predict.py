"""The typed functions behind 'shield run' and 'shield eval', called from Python as a notebook would."""
import numpy as np
import pytest

from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.predict import EvalArgs, RunArgs, classify, evaluate_artifact
from stochastic_shield.runtime_py.runner import Deployment
from stochastic_shield.runtime_py.uncertainty import softmax


def test_classify_rows_agree_with_the_deployments_logits(host_artifact, fashion_root, fashion_test):
    res = classify(RunArgs(host_artifact, data_root=str(fashion_root), index=250, count=10))
    with Deployment(host_artifact) as dep:
        logits = dep.predict_logits(fashion_test.as_float(250, 256))
    assert [r["input"] for r in res.rows] == [f"test[{i}]" for i in range(250, 256)]  # the split ends at 256
    assert [r["true_class"] for r in res.rows] == fashion_test.labels[250:256].tolist()
    assert [r["class"] for r in res.rows] == logits.argmax(1).tolist()
    np.testing.assert_allclose([r["probability"] for r in res.rows], softmax(logits).max(1), rtol=1e-6)
    assert (res.T, res.stochastic) == (1, False)  # a deterministic artifact runs once whatever T asks
    # no seed was given (fresh ones by default) and the artifact has no detector
    assert res.to_json() == {"where": "local", "T": 1, "seed": None, "reject_at": None, "predictions": res.rows}


def test_evaluate_artifact_counts_what_the_deployment_predicts(host_artifact, fashion_root, fashion_test):
    res = evaluate_artifact(EvalArgs(host_artifact, data_root=str(fashion_root), limit=64, progress=False))
    with Deployment(host_artifact) as dep:
        pred = dep.predict_logits(fashion_test.as_float(0, 64)).argmax(1)
    assert res["images"] == 64 and res["correct"] == int((pred == fashion_test.labels[:64]).sum())
    assert res["accuracy"] == res["correct"] / 64 and res["dataset"] == "fashion-mnist" and res["T"] == 1


def test_an_index_outside_the_test_set_is_a_one_line_error(host_artifact, fashion_root):
    with pytest.raises(ShieldError, match=r"--index 256 is outside the test set \(0\.\.255\)"):
        classify(RunArgs(host_artifact, data_root=str(fashion_root), index=256))
