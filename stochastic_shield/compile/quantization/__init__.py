"""Post-training static int8 quantization of Relax modules: policy, calibration, plan, rewrite, reference.

The flow reads top to bottom like PT2E's prepare / calibrate / convert:
  spec = QuantSpec(...)                              # policy (frozen, validated)
  ranges = calibrate(mod, images, spec)              # observers on every activation
  plan = make_plan(mod, ranges, spec)                # typed int8 layers (layers.py) with their integers
  qmod = QuantizeInt8(plan)(mod)                     # Relax backend: int8 between layers
  ref = run_reference(plan, x)                       # numpy backend: the same integer arithmetic
  replica = Replica(plan)                            # PyTorch backend (stochastic_shield/replica.py)
"""
from .calibrate import calibrate
from .emit_relax import QuantizeInt8
from .layers import QuantPlan
from .plan import make_plan
from .reference import run_reference
from .spec import OBSERVERS, QuantSpec

__all__ = ["QuantSpec", "OBSERVERS", "calibrate", "make_plan", "QuantPlan", "QuantizeInt8", "run_reference"]
