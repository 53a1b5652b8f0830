"""forgegrad.data: datasets and batching with torch.utils.data's names.

    ds = TensorDataset(X, y)                          # numpy arrays or Tensors
    train_ds, val_ds = random_split(ds, [0.8, 0.2], generator=0)
    for xb, yb in DataLoader(train_ds, batch_size=32, shuffle=True):
        ...                                           # xb float32 Tensor, yb int64 Tensor

Batch-level augmentation: ``DataLoader(..., transform=transforms.Compose([...]))`` (see
forgegrad.data.transforms: RandomCrop, RandomShift, RandomHorizontalFlip, RandomRotation,
GaussianNoise, Normalize).
"""
from .dataloader import DataLoader, default_collate, get_worker_info
from .dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from . import transforms

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split", "DataLoader", "default_collate",
           "get_worker_info", "transforms"]
