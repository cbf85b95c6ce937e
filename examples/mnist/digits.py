"""A small MNIST-like data set made on the spot (no downloads): 28x28 grey "digits" drawn from
ten noisy class prototypes, so a tiny MLP can learn them in seconds."""
from __future__ import annotations

import numpy as np


def make_digits(n_train: int = 2000, n_val: int = 400, n_test: int = 400, seed: int = 0
                ) -> tuple[np.ndarray, ...]:
    """``(X_train, y_train, X_val, y_val, X_test, y_test)`` as float32 images and int64 labels."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 28, 28)) > 0.7).astype(np.float32)
    total = n_train + n_val + n_test
    labels = rng.integers(0, 10, total)
    images = prototypes[labels] * 0.2 + rng.random((total, 28, 28), dtype=np.float32)
    images = np.clip(images, 0, 1).astype(np.float32)
    cut1, cut2 = n_train, n_train + n_val
    return (images[:cut1], labels[:cut1], images[cut1:cut2], labels[cut1:cut2],
            images[cut2:], labels[cut2:])
