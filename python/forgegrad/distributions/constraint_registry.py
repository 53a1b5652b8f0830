"""torch.distributions.constraint_registry: ``biject_to`` and ``transform_to`` (defined in transforms_more.py)."""
from .transforms_more import ConstraintRegistry, biject_to, transform_to

__all__ = ["ConstraintRegistry", "biject_to", "transform_to"]
