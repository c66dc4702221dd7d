"""Attacks on the shield: a base class, one small class per attack, EOT and BPDA as model wrappers.

Attacks (``Attack`` subclasses; ``attack(images, labels) -> adversarial images`` within eps and
[clip_min, clip_max], detached, untargeted, L-infinity):

  FGSM(model, eps)
  PGD(model, eps, alpha=None, steps=20, random_start=True, seed=None)
  APGD(model, eps, steps=100, restarts=1, loss="ce" | "dlr" | callable, rho=0.75, momentum=0.75, seed=0)
  LevelPGD(model_after_filter, eps, bits, steps=50, alpha=0.25, restarts=1, loss="ce", seed=0)
      .search(images, labels) -> level image; .realise(images, level image) -> pixel image

A model is ``images -> logits (N, K)``; APGD and LevelPGD also take pass logits (N, T, K), such as
``lambda x: replica(x, T=20)``, scored on the log mean softmax. Wrappers make any attack adaptive:

  EOT(model, samples=10, average="logits" | "probs")   mean of stochastic passes (Athalye et al. 2018)
  Passes(model, passes=20, seed=None)                  (N, T, K) passes; a seed fixes the masks
  bpda(fn, approx=None) / BPDA                         fn forward, approx's gradient (None: identity)

Filters (``surrogates``): ``filter_surrogates(specs) -> (fn, [("identity", None), ("smooth", approx)])``
for a FilterSpec or chain; ``soft_bits(x, bits, sharpness)``, ``soft_median(x, k, width)``.

Losses (``losses``), per image ``(output, labels) -> (N,)``: ``ce_loss``, ``dlr_loss``,
``DetectionAwareLoss(base, weight, score="mi" | "entropy" | "variance", threshold=None)``
(Carlini & Wagner 2017: misclassify while keeping MC dropout certain), ``uncertainty(passes, score)``.

Evaluation (``evaluation``, ``stats``):
  worst_case(predict, images, labels, {name: adv}) -> WorstCase(broken, adv, by, errors; .accuracy())
  convergence_check(base, doubled | "steps" | "restarts" | "samples", images, labels, predict)
      -> Convergence(base, doubled, converged, verdict);  double(attack, what)
  accuracy_ci(correct, n, level), auroc(pos, neg)

The strongest evaluation per eps: every attack on the same images, then the worst case per image::

  fn, approxes = filter_surrogates(parse_filters("bits:3"))   # the exact filter, identity and smooth
  advs = {}
  for name, approx in approxes:                    # the defended model with BPDA through its filter
      model = EOT(lambda x, a=approx: net(bpda(fn, a)(x)), samples=20)
      for loss in ("ce", "dlr"):
          advs[f"apgd-{loss}-{name}"] = APGD(model, eps, steps=100, restarts=3, loss=loss)(x, y)
  advs["levels"] = LevelPGD(EOT(net, 20), eps, bits=3)(x, y)  # net: the model after the filter
  wc = worst_case(lambda t: net(fn(t)), x, y, advs)           # predict: the evaluation model
  convergence_check(APGD(model, eps, loss="dlr"), "samples", x, y, predict)   # and "steps", "restarts"
"""
from .apgd import APGD
from .base import Attack
from .evaluation import Convergence, WorstCase, convergence_check, double, worst_case
from .fgsm import FGSM
from .levels import LevelPGD
from .losses import DetectionAwareLoss, ce_loss, dlr_loss, uncertainty
from .pgd import PGD
from .stats import accuracy_ci, auroc
from .surrogates import filter_surrogates, soft_bits, soft_median
from .wrappers import BPDA, EOT, Passes, bpda

__all__ = ["Attack", "FGSM", "PGD", "APGD", "LevelPGD", "EOT", "Passes", "BPDA", "bpda",
           "filter_surrogates", "soft_bits", "soft_median", "ce_loss", "dlr_loss", "DetectionAwareLoss",
           "uncertainty", "worst_case", "WorstCase", "convergence_check", "Convergence", "double",
           "accuracy_ci", "auroc"]
