"""Fixtures for the gpu_worker unit tests (no Django, no DB): tiny easy-VQA subsets and tiny models."""
from __future__ import annotations

import pytest

# A deliberately tiny baseline so a training step takes milliseconds.
TINY_MODEL = {"cnn_channels": [8, 8, 16, 16], "hidden_size": 32}
TINY_PARAMS = dict(TINY_MODEL, epochs=2, batch_size=16, learning_rate=3e-3, val_fraction=0.25, patience=0,
                   warmup_ratio=0.1, seed=0)


@pytest.fixture(scope="session")
def easy_items():
    """About 40 easy-VQA training questions (4 images) and their image folder."""
    from gpu_worker.easyvqa import load_items

    items, root = load_items("train", max_images=4, seed=1)
    assert 30 <= len(items) <= 60
    return items, root


@pytest.fixture(scope="session")
def easy_items_8():
    """About 80 questions over 8 images (for training runs with a validation split)."""
    from gpu_worker.easyvqa import load_items

    return load_items("train", max_images=8, seed=2)


@pytest.fixture
def tiny_params():
    return dict(TINY_PARAMS)


@pytest.fixture
def tiny_adapter(easy_items):
    from gpu_worker.models.registry import get_adapter_class, get_spec

    items, root = easy_items
    spec = get_spec("baseline-rnn")
    return get_adapter_class(spec.key).create(spec, items, root, dict(TINY_PARAMS), device="cpu")


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, easy_items_8):
    """A tiny baseline-rnn trained for 3 epochs; returns (result, out_dir, items, root)."""
    from gpu_worker.train import train_model

    items, root = easy_items_8
    out = tmp_path_factory.mktemp("trained")
    params = dict(TINY_PARAMS, epochs=3)
    result = train_model("baseline-rnn", items, root, str(out), params, device="cpu")
    return result, str(out), items, root
