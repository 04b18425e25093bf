"""Run attribution work without leaving a trace on training.

A check shares the model with a live training loop. ``isolated_from_training`` puts the model in
eval mode with gradients enabled (also when called under ``torch.inference_mode()`` or
``torch.no_grad()``) and autocast off, and restores on exit every module's ``training`` flag, every parameter's
``.grad`` and ``requires_grad``, and the Python, NumPy and torch (CPU and CUDA) random streams.
"""

from __future__ import annotations

import random
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn


@dataclass
class RandomState:
    python: Any
    numpy: Any
    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> "RandomState":
        cuda = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = torch.cuda.get_rng_state_all()
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)


@contextmanager
def full_precision() -> Iterator[None]:
    """Autocast off (CPU and CUDA) inside, whatever the trainer set; its state comes back after.

    A check's integrals and completeness deltas need float32 arithmetic: under a trainer's bf16
    autocast most relative deltas were infinite."""
    with ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type="cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast(device_type="cuda", enabled=False))
        yield


@contextmanager
def isolated_from_training(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and autograd on inside; the model's training state and RNG exactly restored after."""
    rng = RandomState.capture()
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    requires = [p.requires_grad for p in params]
    try:
        with torch.inference_mode(False), torch.enable_grad(), full_precision():
            model.eval()
            yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for p, grad, req in zip(params, grads, requires):
            if p.grad is not grad:
                p.grad = grad
            if p.requires_grad != req:
                p.requires_grad_(req)
        rng.restore()
