"""CUDA: the model and priors match the CPU, bf16 training steps stay finite, ``hiclip train`` runs,
checkpoints and resumes on the GPU, and ``compile_towers`` gives the eager results there.

Skipped on machines without CUDA. Each test takes seconds, except the two ``slow`` ones, which
pay a ``torch.compile`` (inductor / Triton) compilation.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import hiclip
from hiclip.attention import group_prior, tree_prior
from hiclip.config import COMBINE_RULES
from hiclip.tokenizer import TextBatch
from hiclip.train.config import TrainConfig, load_config
from hiclip.train.loop import TrainHooks, train

from model_sizes import SHAPES_32, TWO_LAYER  # tests/model_sizes.py

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

DEVICE = torch.device("cuda")
CAPTIONS = [
    "a red square",
    "two green triangles to the left of a blue circle",
    "A big yellow star",
    "a small blue circle above a red square",
]
# The end-to-end runs: the model of tests/test_train_clip.py (32 x 32 shapes images).
TRAIN_MODEL = SHAPES_32


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """Full fp32 matmuls and convolutions, so GPU results can be held to CPU tolerances."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="module")
def tokenizer() -> hiclip.HiCLIPTokenizer:
    return hiclip.HiCLIPTokenizer.train_word_level(CAPTIONS, context_length=TWO_LAYER["text"]["context_length"])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic shapes dataset of tests/test_train_clip.py (60 images of 32 x 32)."""
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    out = tmp_path_factory.mktemp("shapes") / "data"
    generate_dataset(out, ShapesConfig(n=60, seed=1, image_size=32), workers=1)
    return out


def two_layer_model(tokenizer: hiclip.HiCLIPTokenizer, hierarchy: bool = True, seed: int = 0) -> hiclip.HiCLIP:
    """The two-layer ``hiclip-tiny`` of tests/model_sizes.py, on the CPU, in eval mode."""
    torch.manual_seed(seed)
    return hiclip.create_model("hiclip-tiny", hierarchy=hierarchy, vocab_size=tokenizer.vocab_size,
                               **TWO_LAYER).eval()


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def model_outputs(model: hiclip.HiCLIP, images: torch.Tensor, batch: TextBatch) -> dict[str, torch.Tensor]:
    """Every tensor the encoders return, features and links, moved to the CPU."""
    with torch.no_grad():
        image_aff = model.encode_image(images, return_affinities=True)
        text_aff = model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids,
                                     return_affinities=True)
        joint = model(images, batch.input_ids, batch.attention_mask, word_ids=batch.word_ids)
    out = {"image": image_aff.features, "h": image_aff.h_links, "v": image_aff.v_links,
           "text": text_aff.features, "links": text_aff.links, "n_words": text_aff.n_words,
           **{f"forward.{k}": v for k, v in joint.items()}}
    return {k: v.cpu() for k, v in out.items()}


@pytest.mark.parametrize("hierarchy", [True, False])
def test_fp32_forward_on_cuda_matches_cpu(tokenizer, no_tf32, hierarchy: bool) -> None:
    cpu_model = two_layer_model(tokenizer, hierarchy)
    cuda_model = copy.deepcopy(cpu_model).to(DEVICE)
    assert next(cuda_model.parameters()).device.type == DEVICE.type
    batch = tokenizer(CAPTIONS)
    images = random_images(len(CAPTIONS), TWO_LAYER["vision"]["image_size"])
    expected = model_outputs(cpu_model, images, batch)
    got = model_outputs(cuda_model, images.to(DEVICE), batch.to(DEVICE))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-4, msg=lambda m: f"{key}: {m}")
    # links of a real hierarchy lie in (0, 1] and never decrease over layers, on the GPU too
    for key in ("h", "v"):
        assert torch.all((got[key] > 0) & (got[key] <= 1)) and torch.all(got[key][:, 1:] >= got[key][:, :-1])


@pytest.mark.parametrize("combine", COMBINE_RULES)
def test_priors_on_cuda_match_cpu_with_finite_gradients(combine: str) -> None:
    g = torch.Generator().manual_seed(1)
    links = torch.rand(4, 76, generator=g) * 0.95 + 0.05
    links[0, :4] = torch.tensor([0.0, 1e-12, 1.0, 1.0])  # clamped, tiny and saturated links
    h = torch.rand(4, 7, 6, generator=g) * 0.95 + 0.05
    v = torch.rand(4, 6, 7, generator=g) * 0.95 + 0.05
    h[0, 0, :2] = torch.tensor([0.0, 1.0])
    tree_weight = torch.randn(4, 77, 77, generator=g)
    group_weight = torch.randn(4, 49, 49, generator=g)

    def run(device: torch.device) -> dict[str, torch.Tensor]:
        # copies: on the CPU .to() returns the tensor itself, and requires_grad_ would then make
        # the CUDA copies non-leaf (no .grad)
        a = links.to(device, copy=True).requires_grad_()
        hh, vv = h.to(device, copy=True).requires_grad_(), v.to(device, copy=True).requires_grad_()
        tree = tree_prior(a)
        group = group_prior(hh, vv, combine)
        ((tree * tree_weight.to(device)).sum() + (group * group_weight.to(device)).sum()).backward()
        return {k: t.detach().cpu() for k, t in
                {"tree": tree, "group": group, "d_links": a.grad, "d_h": hh.grad, "d_v": vv.grad}.items()}

    expected, got = run(torch.device("cpu")), run(DEVICE)
    for key, value in expected.items():
        assert torch.isfinite(got[key]).all(), key
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
    assert got["tree"].shape == (4, 77, 77) and got["group"].shape == (4, 49, 49)
    assert torch.all(got["tree"].diagonal(dim1=-2, dim2=-1) == 1)
    assert got["d_links"].abs().sum() > 0 and got["d_h"].abs().sum() > 0 and got["d_v"].abs().sum() > 0


@pytest.mark.parametrize("hierarchy", [True, False])
def test_bf16_autocast_train_step_on_cuda(tokenizer, hierarchy: bool) -> None:
    model = two_layer_model(tokenizer, hierarchy).train().to(DEVICE)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    batch = tokenizer(CAPTIONS).to(DEVICE)
    images = random_images(len(CAPTIONS), TWO_LAYER["vision"]["image_size"]).to(DEVICE)
    losses = []
    for _ in range(2):
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            out = model(images, batch.input_ids, batch.attention_mask, word_ids=batch.word_ids)
            logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
            loss = clip_loss(logits)
        assert logits.dtype == torch.bfloat16  # autocast did run the matmuls in bf16
        assert torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        # every parameter but the MLM head (unused by the CLIP loss) gets a finite fp32 gradient
        assert set(grads) == {name for name in before if ".mlm_" not in name}
        for name, grad in grads.items():
            assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        optimizer.step()
        losses.append(float(loss.detach()))
    assert any(".affinities." in name for name in grads) == hierarchy
    if hierarchy:  # the priors pass gradient back to the affinity modules (the last layer's get
        # none from the CLIP loss: their prior's EOT / CLS row, the only one pooled, is all ones)
        for tower in ("text", "vision"):
            first = [g for name, g in grads.items() if name.startswith(f"{tower}.affinities.0.")]
            assert first and sum(float(g.abs().sum()) for g in first) > 0, tower
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert {name for name, g in grads.items() if g.abs().sum() > 0} <= changed <= set(grads)
    assert losses[0] != losses[1]


def train_config(shapes: Path, *extra: str) -> TrainConfig:
    """A few bf16 steps of every HiDeCLIP objective on the GPU (settings of tests/test_train_clip.py)."""
    return load_config("shapes-tiny", [
        f"data={shapes}", f"model_overrides={json.dumps(TRAIN_MODEL)}", "device=cuda", "precision=bf16",
        "batch_size=8", "max_steps=4", "log_every=1", "progress=false", "num_workers=0",
        "optim.warmup_steps=2", "loss.nn_weight=0.2", "loss.queue_size=16", "loss.multiview=true",
        "loss.simsiam_hidden=16", "loss.simsiam_dim=8", "loss.simsiam_predictor_hidden=4",
        "val_max_samples=12", *extra])


def test_train_on_cuda_checkpoints_resumes_and_reloads(shapes, tmp_path) -> None:
    result = train(train_config(shapes, "checkpoint_every=2"), tmp_path / "run")
    assert result.steps == 4 and result.skipped_steps == 0
    assert math.isfinite(result.last_metrics["loss"]) and result.last_metrics["loss_nn"] > 0
    assert 0 <= result.last_validation["rsum"] <= 600  # validation retrieval ran on the GPU
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params["device"].startswith("cuda") and params["config"]["precision"] == "bf16"

    model, tok = hiclip.load(result.final)
    assert next(model.parameters()).device.type == "cpu"
    saved = load_file(str(result.final / "model.safetensors"))
    state = model.state_dict()
    for name, value in saved.items():
        assert torch.equal(state[name], value), name
    assert all(torch.isfinite(value).all() for value in saved.values() if value.is_floating_point())
    on_gpu, _ = hiclip.load(result.final, map_location=DEVICE)
    assert next(on_gpu.parameters()).device.type == DEVICE.type
    text = tok(CAPTIONS)
    with torch.no_grad():
        expected = model.encode_text(text.input_ids, text.attention_mask, normalize=True)
        got = on_gpu.encode_text(text.input_ids.to(DEVICE), text.attention_mask.to(DEVICE), normalize=True)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-3, atol=1e-3)  # TF32 may be on here

    class Interrupt(Exception):
        pass

    def stop_at_3(step: int, record: dict) -> None:
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(train_config(shapes, "checkpoint_every=2"), tmp_path / "cut", hooks=TrainHooks(on_step=stop_at_3))
    assert (tmp_path / "cut" / "checkpoints" / "latest").resolve().name == "step_2"
    at_step_2 = load_file(str(tmp_path / "cut" / "checkpoints" / "step_2" / "model.safetensors"))
    resumed = train(train_config(shapes, "checkpoint_every=2"), tmp_path / "cut", resume="latest")
    assert resumed.steps == 4 and resumed.skipped_steps == 0
    assert math.isfinite(resumed.last_metrics["loss"])
    log = (tmp_path / "cut" / "out.log").read_text()
    assert "resumed from" in log and "different config" not in log
    # GPU kernels need not be bit-reproducible, so the resumed run is held to the uninterrupted
    # one relative to what steps 3-4 changed: a lost optimiser, schedule or data position would
    # move the weights about as far as the steps themselves.
    reference = load_file(str(result.final / "model.safetensors"))
    final = load_file(str(resumed.final / "model.safetensors"))
    names = [name for name, value in reference.items() if value.is_floating_point()]
    update = sum(float((reference[n] - at_step_2[n]).abs().sum()) for n in names)
    mismatch = sum(float((final[n] - reference[n]).abs().sum()) for n in names)
    assert update > 0 and mismatch <= 0.05 * update, (mismatch, update)


@pytest.mark.slow
def test_compiled_towers_match_eager_on_cuda(tokenizer, no_tf32) -> None:
    eager = two_layer_model(tokenizer, hierarchy=True).to(DEVICE)
    compiled = copy.deepcopy(eager)
    compiled.compile_towers()
    batch = tokenizer(CAPTIONS).to(DEVICE)
    images = random_images(len(CAPTIONS), TWO_LAYER["vision"]["image_size"]).to(DEVICE)

    def run(model: hiclip.HiCLIP) -> tuple[torch.Tensor, ...]:
        # One forward + backward only: every other call signature would cost another compilation.
        out = model(images, batch.input_ids, batch.attention_mask)
        clip_loss(out["logit_scale"] * out["image_features"] @ out["text_features"].T).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return out["image_features"], out["text_features"], grads

    expected, got = run(eager), run(compiled)
    assert got[2].shape == expected[2].shape
    for a, b in zip(expected, got):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)  # fused kernels reorder the sums


@pytest.mark.slow
def test_train_with_compile_on_cuda(shapes, tmp_path) -> None:
    # One step, one view: every new input shape or call signature would cost another compilation.
    result = train(train_config(shapes, "compile=true", "max_steps=1", "val_split=null", "loss.multiview=false",
                                "loss.nn_weight=0.0"), tmp_path / "run")
    assert result.steps == 1 and result.skipped_steps == 0
    assert math.isfinite(result.last_metrics["loss"])
    model, _ = hiclip.load(result.final)  # compiled towers save the plain state_dict keys
    expected = hiclip.create_model("hiclip-tiny", vocab_size=model.config.text.vocab_size, **TRAIN_MODEL)
    assert list(model.state_dict()) == list(expected.state_dict())


def _step_outputs(model: hiclip.HiCLIP, images: torch.Tensor, batch: TextBatch, bf16: bool = False) -> list[torch.Tensor]:
    """Features, links and every parameter gradient of one CLIP + links loss step, on the CPU."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        image = model.encode_image(images, normalize=True, return_affinities=True)
        text = model.encode_text(batch.input_ids, batch.attention_mask, normalize=True, word_ids=batch.word_ids,
                                 return_affinities=True)
        loss = (clip_loss(model.logit_scale.exp() * image.features @ text.features.T)
                + image.h_links.mean() + image.v_links.mean() + text.links.mean())
    loss.backward()
    out = [image.features, text.features, image.h_links, image.v_links, text.links]
    return [t.detach().float().cpu() for t in out + [p.grad for p in model.parameters() if p.grad is not None]]


@pytest.mark.parametrize("combine", COMBINE_RULES)
def test_fused_path_matches_reference_on_cuda(tokenizer, no_tf32, monkeypatch, combine: str) -> None:
    """hiclip/fused_attention.py (the CUDA default) against hiclip/attention.py, values and gradients."""
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size, affinity={"combine": combine},
                                **TWO_LAYER).to(DEVICE)
    batch = tokenizer(CAPTIONS).to(DEVICE)
    images = random_images(len(CAPTIONS), TWO_LAYER["vision"]["image_size"]).to(DEVICE)
    monkeypatch.delenv("HICLIP_ATTENTION", raising=False)
    from hiclip.fused_attention import fused_enabled

    assert fused_enabled(DEVICE)
    fused = _step_outputs(model, images, batch)
    monkeypatch.setenv("HICLIP_ATTENTION", "reference")
    reference = _step_outputs(model, images, batch)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_fused_path_under_bf16_on_cuda_stays_near_fp32(tokenizer, monkeypatch) -> None:
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size, **TWO_LAYER).to(DEVICE)
    batch = tokenizer(CAPTIONS).to(DEVICE)
    images = random_images(len(CAPTIONS), TWO_LAYER["vision"]["image_size"]).to(DEVICE)
    monkeypatch.setenv("HICLIP_ATTENTION", "reference")
    exact = _step_outputs(model, images, batch)
    reference = _step_outputs(model, images, batch, bf16=True)
    monkeypatch.setenv("HICLIP_ATTENTION", "fused")
    fused = _step_outputs(model, images, batch, bf16=True)
    for e, r, f in zip(exact, reference, fused):
        assert torch.isfinite(f).all()
        scale = e.norm().item() + 1e-12
        assert (f - e).norm().item() / scale <= 2 * (r - e).norm().item() / scale + 1e-2


def test_fused_prior_attention_holds_less_memory_than_the_reference() -> None:
    """The fused attention saves the softmax, not softmax * C: one (B, heads, N, N) tensor fewer."""
    from hiclip.fused_attention import prior_attention

    B, H, N, dh = 8, 8, 256, 64
    q, k, v = (torch.randn(B, H, N, dh, device=DEVICE, requires_grad=True) for _ in range(3))
    prior = torch.rand(B, N, N, device=DEVICE, requires_grad=True)

    def peak(fn) -> tuple[float, torch.Tensor]:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        held = torch.cuda.memory_allocated() - before  # what the graph keeps for backward, with the output
        out.sum().backward()
        return held, out.detach()

    def reference() -> torch.Tensor:
        return ((q @ k.transpose(-1, -2) * dh**-0.5).softmax(-1) * prior.unsqueeze(1)) @ v

    held_ref, out_ref = peak(reference)
    grads_ref = [t.grad.clone() for t in (q, k, v, prior)]
    for t in (q, k, v, prior):
        t.grad = None
    held_fused, out_fused = peak(lambda: prior_attention(q, k, v, None, prior))
    torch.testing.assert_close(out_fused, out_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip((q.grad, k.grad, v.grad, prior.grad), grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    attention_maps = B * H * N * N * 4
    assert held_fused <= held_ref - 0.9 * attention_maps, (held_fused, held_ref)


@pytest.mark.slow
def test_compiled_towers_with_cuda_graphs_match_eager(tokenizer, no_tf32) -> None:
    """compile_towers(mode="reduce-overhead"): CUDA graphs give the eager numbers, step after step."""
    eager = two_layer_model(tokenizer, hierarchy=True).to(DEVICE)
    compiled = copy.deepcopy(eager)
    compiled.compile_towers(mode="reduce-overhead")
    batch = tokenizer(CAPTIONS).to(DEVICE)
    images = random_images(len(CAPTIONS), TWO_LAYER["vision"]["image_size"]).to(DEVICE)

    def run(model: hiclip.HiCLIP) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.compiler.cudagraph_mark_step_begin()
        out = model(images, batch.input_ids, batch.attention_mask)
        clip_loss(out["logit_scale"] * out["image_features"] @ out["text_features"].T).backward()
        return [out["image_features"].detach().clone(), out["text_features"].detach().clone(),
                torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])]

    expected = run(eager)
    for _ in range(3):  # warm-up, recording, then replays of the graphs
        got = run(compiled)
    for a, b in zip(expected, got):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
