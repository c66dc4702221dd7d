"""PyTorch import: numeric parity of the imported module, and readable errors for what TVM lacks."""
import numpy as np
import pytest
import torch

from stochastic_shield.compile.importer import import_model, unsupported_ops, export_model
from stochastic_shield.errors import ShieldError


class _WithBessel(torch.nn.Module):
    """A model with one operator TVM's importer does not know, inside a named sub-layer."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Linear(4, 4))
        self.head = _Bessel()

    def forward(self, x):
        return self.head(self.features(x))


class _Bessel(torch.nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x)


def test_unsupported_operator_error_names_operator_and_layer():
    with pytest.raises(ShieldError) as e:
        import_model(_WithBessel(), (1, 4))
    msg = str(e.value)
    assert "bessel_j0" in msg and "head (_Bessel)" in msg and "\n" not in msg


def test_unsupported_ops_lists_nothing_for_the_shipped_model(shipped):
    model, meta = shipped
    ep = export_model(model, torch.zeros(meta["input_shape"]))
    assert unsupported_ops(ep) == []


def test_untraceable_model_gives_one_line_error():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(ShieldError, match="torch.export could not trace"):
        import_model(DataDependent(), (1, 4))


def test_imported_resnet_matches_pytorch():
    """The residual network imports and runs in TVM with the same output as PyTorch."""
    import tvm
    from tvm import relax

    from stochastic_shield.data import dataset_info
    from stochastic_shield.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet8", dataset_info("cifar10"), dropout=0.1).eval()
    x = torch.rand(2, 3, 32, 32)
    mod = import_model(model, x.shape)
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy(), device=tvm.cpu())).numpy()
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-4)
