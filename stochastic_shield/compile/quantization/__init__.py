"""Post-training static int8 quantization of Relax modules: policy, calibration, plan, rewrite, reference.

The flow reads top to bottom like PT2E's prepare / calibrate / convert:
  spec = QuantSpec(...)                              # policy (frozen, validated)
  ranges = calibrate(mod, images, spec)              # observers on every activation
  plan = make_plan(mod, ranges, spec)                # integer parameters, one record per layer
  qmod = QuantizeInt8(plan)(mod)                     # the Relax rewrite: int8 between layers
  ref = run_reference(plan, x)                       # numpy, the same integer arithmetic
"""
from .calibrate import calibrate
from .plan import QuantPlan, make_plan
from .quantize_int8 import QuantizeInt8
from .reference import run_reference
from .spec import OBSERVERS, QuantSpec

__all__ = ["QuantSpec", "OBSERVERS", "calibrate", "make_plan", "QuantPlan", "QuantizeInt8", "run_reference"]
