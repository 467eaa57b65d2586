"""``HiCLIP.compile_towers``: torch.compile of both towers gives the eager outputs and gradients."""
from __future__ import annotations

import shutil

import pytest
import torch

import hiclip

from model_sizes import TWO_LAYER  # tests/model_sizes.py

torch.set_num_threads(1)

CAPTIONS = ["a red square", "two green triangles to the left of a blue circle", "A big yellow star"]

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="torch.compile on CPU needs a C++ compiler")


def test_compiled_towers_match_eager() -> None:
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level(CAPTIONS, context_length=16)
    batch = tokenizer(CAPTIONS)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    eager = hiclip.create_model("hiclip-tiny", hierarchy=True, vocab_size=tokenizer.vocab_size, **TWO_LAYER)
    torch.manual_seed(0)
    compiled = hiclip.create_model("hiclip-tiny", hierarchy=True, vocab_size=tokenizer.vocab_size, **TWO_LAYER)
    keys = list(compiled.state_dict())
    compiled.compile_towers()
    assert list(compiled.state_dict()) == keys  # checkpoints stay interchangeable

    def run(model: hiclip.HiCLIP) -> tuple[torch.Tensor, ...]:
        # One forward + backward only: every other call signature would cost another compilation.
        out = model(images, batch.input_ids, batch.attention_mask)
        (out["image_features"] @ out["text_features"].T).logsumexp(1).mean().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return out["image_features"], out["text_features"], grads

    for a, b in zip(run(eager), run(compiled)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
