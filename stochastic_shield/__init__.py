"""stochastic-shield: int8 CNNs on small Arm boards, defended by input filtering and MC dropout."""

__version__ = "0.1.0"

from .errors import ShieldError  # noqa: E402,F401
