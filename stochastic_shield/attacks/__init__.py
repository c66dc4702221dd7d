"""Attacks on the shield: FGSM and PGD on a base class, EOT and BPDA wrappers, evaluation statistics."""
from .base import Attack
from .fgsm import FGSM
from .pgd import PGD
from .stats import accuracy_ci, auroc
from .wrappers import BPDA, EOT, bpda

__all__ = ["Attack", "FGSM", "PGD", "EOT", "BPDA", "bpda", "accuracy_ci", "auroc"]
