"""torch.distributions.utils' public helpers (``from torch.distributions.utils import probs_to_logits``)."""
from .distribution import broadcast_all, clamp_probs, lazy_property, logits_to_probs, probs_to_logits

euler_constant = 0.57721566490153286060

__all__ = ["broadcast_all", "clamp_probs", "euler_constant", "lazy_property", "logits_to_probs", "probs_to_logits"]
