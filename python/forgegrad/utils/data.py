"""``forgegrad.utils.data``: forgegrad.data under torch.utils.data's name, so that
``from forgegrad.utils.data import DataLoader, Dataset, TensorDataset, random_split`` works."""
from ..data import *  # noqa: F401,F403
from ..data import __all__  # noqa: F401
