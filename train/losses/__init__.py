"""Contrastive losses for two-tower training; the trainer picks one by name."""

from train.losses.sigmoid import sigmoid_loss

__all__ = ["sigmoid_loss"]
