"""forgegrad.nn: modules and layers with PyTorch's names.

Each module file lists its layers in ``__all__``; a layer added to a file is exported from here
without editing this list of files.
"""
from . import functional, init, utils
from .activation import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .container import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .module import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .parameter import *  # noqa: F401,F403
from .position import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from .sparse import *  # noqa: F401,F403
from .transformer import *  # noqa: F401,F403
# the layer classes the star imports above brought in, and the helper modules
__all__ = ["functional", "init", "utils"] + sorted(n for n, v in globals().items() if isinstance(v, type))
