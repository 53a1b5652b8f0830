"""forgegrad.train: a training loop with metrics, callbacks and a progress bar, plus Keras-style sugar.

    from forgegrad.train import fit, evaluate, predict, EarlyStopping, ModelCheckpoint
    history = fit(model, loss_fn, optimizer, train_loader, epochs=30, val_loader=val_loader,
                  callbacks=[EarlyStopping(patience=3, restore_best_weights=True),
                             ModelCheckpoint("best.safetensors", save_best_only=True)])
    history["val_accuracy"][-1]
"""
from . import keras
from .callbacks import Callback, EarlyStopping, FitState, History, LambdaCallback, ModelCheckpoint
from .distillation import DistillationLoss, distillation_loss
from .loop import evaluate, fit, predict
from .metrics import Accuracy, MeanAbsoluteError, Metric
from .pruning import ConstantSparsity, PolynomialDecay, PruningSchedule

__all__ = ["fit", "evaluate", "predict", "History", "Callback", "EarlyStopping", "ModelCheckpoint",
           "LambdaCallback", "FitState", "Metric", "Accuracy", "MeanAbsoluteError", "keras",
           "DistillationLoss", "distillation_loss", "PruningSchedule", "ConstantSparsity", "PolynomialDecay"]
