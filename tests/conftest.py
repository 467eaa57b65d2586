import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hiclip.paths import data_root  # noqa: E402


@pytest.fixture
def shared_data():
    """The real evaluation data folder; tests that use it skip when it is absent."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set HICLIP_DATA)")
    return root


@pytest.fixture
def one_thread():
    """One torch thread: on a shared, oversubscribed CPU, thread hand-offs dominate tiny ops."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
