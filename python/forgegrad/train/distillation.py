"""Knowledge distillation: ``DistillationLoss`` and the teacher step that ``fit(..., teacher=...)`` runs.

    loss_fn = DistillationLoss(temperature=4.0, alpha=0.7)
    fit(student, loss_fn, optim.Adam(student.parameters()), loader, epochs=10, teacher=teacher)

The loss follows Hinton et al.: alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) (mean over
the batch) + (1 - alpha) * cross_entropy(student, labels). The T^2 keeps the soft term's gradient on
the scale of the hard one when T changes. The teacher's logits carry no gradient.
"""
from __future__ import annotations

import numbers

from ..nn import functional as F
from ..tensor import Tensor

__all__ = ["DistillationLoss", "distillation_loss"]


def _check(temperature, alpha):
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"DistillationLoss: temperature must be a positive number, got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"DistillationLoss: alpha must be a number in [0, 1], got {alpha!r}")
    return float(temperature), float(alpha)


def _logits(x, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"distillation_loss: {what} must be a forgegrad Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"distillation_loss: {what} must be (batch, classes), got shape {tuple(x.shape)}")
    return x


def distillation_loss(teacher_logits, student_logits, labels, temperature: float = 4.0, alpha: float = 0.5):
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels)
    (argument order as in the compression issue: teacher first). Scalar Tensor; gradient flows into
    ``student_logits`` only."""
    temperature, alpha = _check(temperature, alpha)
    t = _logits(teacher_logits, "teacher_logits").detach()
    s = _logits(student_logits, "student_logits")
    if tuple(t.shape) != tuple(s.shape):
        raise ValueError(f"distillation_loss: teacher_logits {tuple(t.shape)} and student_logits "
                         f"{tuple(s.shape)} must have the same shape")
    soft = F.kl_div(F.log_softmax(s * (1.0 / temperature), dim=1), F.log_softmax(t * (1.0 / temperature), dim=1),
                    reduction="batchmean", log_target=True)
    loss = soft * (alpha * temperature * temperature)
    if alpha < 1.0:
        loss = loss + F.cross_entropy(s, labels) * (1.0 - alpha)
    return loss


class DistillationLoss:
    """``DistillationLoss(temperature, alpha)(teacher_logits, student_logits, labels)``; see
    ``distillation_loss``. ``hard_loss(student_logits, labels)`` is the plain cross-entropy, which
    ``fit`` reports as the validation loss when it trains with a teacher."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5):
        self.temperature, self.alpha = _check(temperature, alpha)

    def __call__(self, teacher_logits, student_logits, labels):
        return distillation_loss(teacher_logits, student_logits, labels, self.temperature, self.alpha)

    @staticmethod
    def hard_loss(student_logits, labels):
        return F.cross_entropy(student_logits, labels)

    def __repr__(self):
        return f"DistillationLoss(temperature={self.temperature}, alpha={self.alpha})"
