"""forgegrad.nn: modules and layers with PyTorch's names.

Each module file lists its layers in ``__all__``; a layer added to a file is exported from here
without editing this list of files.
"""
from . import functional, init, modules, utils
from .activation import *  # noqa: F401,F403
from .activation_extra import *  # noqa: F401,F403
from .adaptive import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .buffer import *  # noqa: F401,F403
from .container import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .conv_transpose import *  # noqa: F401,F403
from .conv3d import *  # noqa: F401,F403
from .data_parallel import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .embedding_bag import *  # noqa: F401,F403
from .fractional_pool import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .linear_cross_entropy import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .loss_extra import *  # noqa: F401,F403
from .lazy import *  # noqa: F401,F403
from .module import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .normalization_group import *  # noqa: F401,F403
from .parameter import *  # noqa: F401,F403
from .parameter_containers import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .position import *  # noqa: F401,F403
from .resample import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from .sparse import *  # noqa: F401,F403
from .sync_batchnorm import *  # noqa: F401,F403
from .transformer import *  # noqa: F401,F403
# the layer classes the star imports above brought in, and the helper modules
__all__ = ["functional", "init", "modules", "utils"] + sorted(n for n, v in globals().items() if isinstance(v, type))

# torch.nn names that forgegrad has under another name, or not yet: the AttributeError says so.
_TORCH_NAMES: dict = {}


def __getattr__(name):
    if name in _TORCH_NAMES:
        where = _TORCH_NAMES[name]
        hint = f"; forgegrad has it as {where}" if where else "; forgegrad has no equivalent yet"
        raise AttributeError(f"module 'forgegrad.nn' has no attribute {name!r} (torch.nn.{name}){hint}")
    raise AttributeError(f"module 'forgegrad.nn' has no attribute {name!r}")
