"""An imported CLIP in the rest of the toolkit: the causal text tower and its attention links,
``hiclip induce`` / ``eval`` / ``figures`` / the app, the CLIP-style triple, and ``hiclip train
--init`` with every objective (and its one-line errors)."""
from __future__ import annotations

import json
from pathlib import Path

import nltk
import numpy as np
import pytest
import torch

import hiclip
from clip_folders import TEXTS, make_clip_folder
from hiclip.attention import attention_links_causal_chain
from hiclip.cli import main
from hiclip.errors import HiCLIPError
from hiclip.interop.hf_clip import import_clip_checkpoint
from hiclip.model import word_level_links
from hiclip.train.config import load_config
from hiclip.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A 224-px CLIP (7 x 7 patches of 32 px) imported plain and with a fresh hierarchy, and shapes data."""
    from hiclip.data.shapes import ShapesConfig, generate_dataset

    root = tmp_path_factory.mktemp("imported")
    generate_dataset(root / "shapes", ShapesConfig(n=30, seed=2, image_size=32, negatives=1), workers=1)
    make_clip_folder(root / "hf", image_size=224, patch_size=32, context=77)
    paths = {"root": root, "data": root / "shapes", "hf": root / "hf"}
    paths["clip"], _ = import_clip_checkpoint(root / "hf", root / "checkpoints" / "clip")
    paths["hiclip"], _ = import_clip_checkpoint(root / "hf", root / "checkpoints" / "hiclip", hierarchy=True)
    paths["hiclip-ungated"], _ = import_clip_checkpoint(root / "hf", root / "ungated", hierarchy=True,
                                                        prior_gate=False)  # outside the app's checkpoints
    return paths


def test_causal_tower_never_looks_ahead(setup) -> None:
    model, tok = hiclip.load(setup["clip"])
    batch = tok(["a red square to the left", "a red square above the dog"])
    with torch.no_grad():
        states = model.text.forward_tokens(batch.input_ids, batch.attention_mask)
        attention = model.encode_text(batch.input_ids, batch.attention_mask, return_attention=True).attention
    shared = 4  # SOT a red square: the same prefix, so the same states under a causal mask
    torch.testing.assert_close(states[0, :shared], states[1, :shared], rtol=0, atol=1e-6)
    assert not torch.allclose(states[0, shared + 1], states[1, shared + 1])
    assert torch.all(attention.triu(1) == 0) and attention.shape[1] == 2
    hiclip_model, _ = hiclip.load(setup["hiclip"])  # with the hierarchy the prior multiplies the masked attention
    with torch.no_grad():
        attention = hiclip_model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids,
                                             return_attention=True).attention
    assert torch.all(attention.triu(1) == 0) and torch.all(attention.sum(-1) <= 1 + 1e-5)


def test_causal_attention_links_definition() -> None:
    # one layer, four tokens, rows = queries; causal: nothing above the diagonal
    attention = torch.tensor([[[[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.1, 0.6, 0.3, 0], [0.2, 0.2, 0.1, 0.5]]]])
    gaps = torch.tensor([[True, True, False]])
    links = attention_links_causal_chain(attention, gaps, eps=0.0)
    # gap k: A[k+1, k] / (A[k+1, k] + A[k+1, k+1]); gap 2 is not a word gap
    torch.testing.assert_close(links, torch.tensor([[[0.5, 0.6 / 0.9, 0.0]]]))
    two = torch.cat([attention, attention], 1)
    stacked = attention_links_causal_chain(two, gaps, eps=0.0)
    torch.testing.assert_close(stacked[0, 1, :2], 1 - (1 - links[0, 0, :2]) ** 2)  # hierarchical constraint


def test_imported_vanilla_links_come_from_its_causal_attention(setup) -> None:
    model, tok = hiclip.load(setup["clip"])
    batch = tok(TEXTS)
    with torch.no_grad():
        out = model.encode_text(batch.input_ids, batch.attention_mask, word_ids=batch.word_ids,
                                return_affinities=True, return_attention=True)
    attention = out.attention
    masks = model.text.token_masks(batch.input_ids, batch.attention_mask, batch.word_ids)
    expected = word_level_links(attention_links_causal_chain(attention, masks["boundary"]), masks["word_ids"])
    torch.testing.assert_close(out.links, expected["links"])
    links = out.links
    assert torch.all(links[:, 1:] >= links[:, :-1] - 1e-6)  # non-decreasing over layers
    n = int(batch.n_words[1])
    assert torch.all(links[1, :, : n - 1] > 0.0) and torch.all(links[1, :, n - 1:] == 0.0)


@pytest.mark.slow
def test_induce_eval_and_figures_on_an_imported_224px_clip(setup, tmp_path, capsys) -> None:
    for name in ("clip", "hiclip"):
        out = tmp_path / f"{name}.jsonl"
        assert main(["induce", "--checkpoint", str(setup[name]), "--data", str(setup["data"]), "--split", "test",
                     "--out", str(out), "--label-maps"]) == 0
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert records and all(r["model"]["hierarchy"] == (name == "hiclip") for r in records)
        for record in records:
            assert record["image"]["grid"] == [7, 7] and np.asarray(record["image"]["h_links"]).shape == (2, 7, 6)
            for entry in record["text"]:
                tokens = entry["tokens"]
                assert np.asarray(entry["links"]).shape == (2, len(tokens) - 1)
                assert nltk.Tree.fromstring(entry["tree"]).leaves() == tokens
        assert main(["score", "groups", "--pred", str(out), "--data", str(setup["data"]), "--split", "test",
                     "--baselines", "none"]) == 0
    results = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(setup["clip"]), "--data", str(setup["data"]), "--split", "test",
                 "--out", str(results)]) == 0
    assert json.loads(results.read_text())["retrieval"]["n_images"] == len(records)
    capsys.readouterr()
    figures = tmp_path / "figs"
    assert main(["figures", "--checkpoint", str(setup["hiclip"]), "--compare", f"CLIP={setup['clip']}",
                 "--data", str(setup["data"]), "--split", "test", "--random", "1", "--out", str(figures)]) == 0
    assert (figures / "figures.json").is_file()


@pytest.mark.slow
def test_app_shows_an_imported_clip(setup, monkeypatch, tmp_path) -> None:
    from streamlit.testing.v1 import AppTest

    app = Path(__file__).resolve().parent.parent / "app.py"
    monkeypatch.setenv("HICLIP_CHECKPOINTS", str(setup["root"] / "checkpoints"))
    monkeypatch.setenv("HICLIP_APP_DATA", str(setup["data"]))
    monkeypatch.setenv("HICLIP_DATA", str(tmp_path / "no-real-data"))
    at = AppTest.from_file(str(app), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="checkpoint").options == ["clip", "hiclip"]
    for checkpoint in ("clip", "hiclip"):
        at.selectbox(key="checkpoint").set_value(checkpoint).run()
        assert not at.exception and not at.error, [e.value for e in at.exception]
        assert at.slider(key="layer").max == 1  # two layers
        for view in ("Segment tree", "Metrics", "Retrieval"):
            at.radio(key="view").set_value(view).run()
            assert not at.exception and not at.error, (checkpoint, view, [e.value for e in at.exception])


def test_clip_style_triple(setup) -> None:
    model, transform, tokenizer = hiclip.load_clip_style(setup["hiclip"])
    from PIL import Image

    image = Image.new("RGB", (300, 200), (200, 30, 30))
    pixels = transform(image).unsqueeze(0)
    assert pixels.shape == (1, 3, 224, 224)
    tokens = tokenizer(["a red square", "two dogs"]).to("cpu")
    assert tokens.input_ids.shape == (2, 77)
    with torch.no_grad():
        text = model.encode_text(tokens)
        plain = model.encode_text(tokens.input_ids)  # ids alone: the mask ends at the first EOT
        own, own_tok = hiclip.load(setup["hiclip"])
        batch = own_tok(["a red square", "two dogs"])
        torch.testing.assert_close(text, own.encode_text(batch.input_ids, batch.attention_mask,
                                                         word_ids=batch.word_ids), rtol=0, atol=1e-6)
        vanilla, _, vanilla_tok = hiclip.load_clip_style(setup["hf"])  # a CLIPModel folder, imported in memory
        ids = vanilla_tok(["a red square"])
        torch.testing.assert_close(vanilla.encode_text(ids), vanilla.encode_text(ids.input_ids), rtol=0, atol=1e-6)
        image_features, text_features, scale = model(pixels, tokens)
    assert plain.shape == text.shape and image_features.shape == (1, 24) and float(scale) > 0


def test_clip_benchmark_metrics_run_on_the_triple(setup) -> None:
    """CLIP_benchmark's own retrieval metric on the triple. CLIP_benchmark needs torchvision and
    open_clip, so it is not a dependency; its metrics module alone imports without them
    (``pip install --no-deps --target DIR clip_benchmark`` and ``PYTHONPATH=DIR``)."""
    zeroshot_retrieval = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    from PIL import Image

    from hiclip.interop.clip_style import load_clip_benchmark

    image = Image.new("RGB", (300, 200), (200, 30, 30))

    bench_model, bench_transform, bench_tok = load_clip_benchmark("hiclip", str(setup["clip"]))
    loader = [(torch.stack([bench_transform(image)] * 2), [["a red square"], ["a blue circle"]])]
    metrics = zeroshot_retrieval.evaluate(bench_model, loader, bench_tok, "cpu", amp=False, recall_k_list=[1])
    assert set(metrics) >= {"image_retrieval_recall@1", "text_retrieval_recall@1"}


def _init_config(setup, *extra: str, model: str | None = "init", init: str = "hiclip"):
    return load_config("shapes-tiny", [
        f"data={setup['data']}", "batch_size=4", "max_steps=1", "log_every=1", "progress=false", "val_split=null",
        "loss.simsiam_weight=0", "loss.mlm_weight=0", "loss.nn_weight=0", "loss.multiview=false", "loss.hard_negatives=false", "image_views=1", "augment=none", "loss.queue_size=8", "loss.simsiam_hidden=16", "loss.simsiam_dim=8",
        "loss.simsiam_predictor_hidden=4", "optim.warmup_steps=0", *extra],
        init=str(setup[init]), model=model)


OBJECTIVES = {
    "clip": [],
    "simsiam": ["loss.simsiam_weight=0.5", "image_views=2"],
    "mlm": ["loss.mlm_weight=1.0"],
    "nn": ["loss.nn_weight=0.5"],
    "multiview": ["loss.multiview=true", "loss.text_view=caption"],
    "hard_negatives": ["loss.hard_negatives=true"],
    "text_mlm": ["mode=mlm", "loss.clip_weight=0"],
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_one_fine_tuning_step_per_objective(setup, tmp_path, objective) -> None:
    before, _ = hiclip.load(setup["hiclip"])
    result = train(_init_config(setup, *OBJECTIVES[objective]), tmp_path / "run")
    assert result.steps == 1 and result.skipped_steps == 0
    after, tokenizer = hiclip.load(result.final)
    assert after.config.hierarchy and after.config.text.causal
    mlm = objective in ("mlm", "text_mlm")
    assert (tokenizer.mask_token_id is not None) == mlm and after.config.text.mlm_head == mlm
    assert after.config.affinity.prior_gate  # the import's closed gates, kept from the checkpoint
    changed = [k for k, v in before.state_dict().items() if k in after.state_dict()
               and v.shape == after.state_dict()[k].shape and not torch.equal(v, after.state_dict()[k])]
    assert any(k.startswith("text.blocks") for k in changed) and "text.prior_gate" in changed
    if objective != "text_mlm":
        assert any(k.startswith("vision.blocks") for k in changed) and "vision.prior_gate" in changed
    else:
        assert after.config.vision is None
    log = (tmp_path / "run" / "out.log").read_text()
    assert f"initialised from {setup['hiclip']}" in log
    if mlm:
        assert "added the mask token '<|mask|>'" in log and tokenizer.vocab_size == before.config.text.vocab_size + 1


@pytest.mark.parametrize("objective", ["clip", "text_mlm"])
def test_one_fine_tuning_step_without_prior_gates(setup, tmp_path, objective) -> None:
    """Without gates (import-clip --no-prior-gate) the prior acts from step 0: the affinities learn at once."""
    before, _ = hiclip.load(setup["hiclip-ungated"])
    result = train(_init_config(setup, *OBJECTIVES[objective], init="hiclip-ungated"), tmp_path / "run")
    after, _ = hiclip.load(result.final)
    assert result.steps == 1 and not after.config.affinity.prior_gate and after.text.prior_gate is None
    moved = {k for k, v in before.state_dict().items() if k in after.state_dict() and ".affinities." in k
             and k.endswith(".k.weight") and not torch.equal(v, after.state_dict()[k])}
    # the fresh key projections start at zero, where weight decay does nothing: a gradient moved them
    assert any(k.startswith("text.") for k in moved)
    assert objective == "text_mlm" or any(k.startswith("vision.") for k in moved)


def test_init_recipe_must_agree_or_be_overridden(setup, tmp_path, capsys) -> None:
    with pytest.raises(HiCLIPError, match="differs from the checkpoint in .*--model init"):
        train(_init_config(setup, model=None), tmp_path / "a")
    with pytest.raises(HiCLIPError, match="hierarchy on but the checkpoint has it off.*import-clip --hierarchy"):
        train(_init_config(setup, init="clip"), tmp_path / "b")
    with pytest.raises(HiCLIPError, match="sizes cannot change"):
        train(_init_config(setup, 'model_overrides={"text": {"width": 64}}'), tmp_path / "c")
    # a setting that keeps the shapes may be changed explicitly: fine-tune the tower bidirectionally
    result = train(_init_config(setup, 'model_overrides={"text": {"causal": false}}'), tmp_path / "d")
    assert not hiclip.load(result.final)[0].config.text.causal
    # the prior gates are weights: they come from the checkpoint, whatever the recipe's model says
    with pytest.raises(HiCLIPError, match="affinity.prior_gate is True in the checkpoint and cannot change"):
        train(_init_config(setup, 'model_overrides={"affinity": {"prior_gate": false}}'), tmp_path / "g")
    with pytest.raises(HiCLIPError, match="affinity.prior_gate is False in the checkpoint"):
        train(_init_config(setup, 'model_overrides={"affinity": {"prior_gate": true}}', init="hiclip-ungated"),
              tmp_path / "h")
    vanilla = train(_init_config(setup, "hierarchy=false", init="clip"), tmp_path / "e")
    assert not hiclip.load(vanilla.final)[0].config.hierarchy
    capsys.readouterr()
    assert main(["train", "--config", "shapes-tiny", "--data", str(setup["data"]), "--init", str(setup["hiclip"]),
                 "--out", str(tmp_path / "f"), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --init") and "\n" not in err
    with pytest.raises(HiCLIPError, match="needs|no init"):
        load_config("shapes-tiny", [f"data={setup['data']}"], model="init")


def test_init_run_resumes_without_its_init_checkpoint(setup, tmp_path) -> None:
    import shutil

    init = tmp_path / "init"
    shutil.copytree(setup["hiclip"], init)
    config = load_config("shapes-tiny", [
        f"data={setup['data']}", "batch_size=4", "max_steps=1", "progress=false", "val_split=null",
        "loss.simsiam_weight=0", "image_views=1", "augment=none", "optim.warmup_steps=0"],
        init=str(init), model="init")
    train(config, tmp_path / "run")
    shutil.rmtree(init)  # the run's own checkpoint holds the model and the tokenizer (with its mask token)
    config.max_steps = 2
    resumed = train(config, tmp_path / "run", resume="latest")
    assert resumed.steps == 2 and hiclip.load(resumed.final)[1].mask_token_id is not None


def test_a_fine_tuned_import_exports_with_its_grown_vocabulary(setup, tmp_path) -> None:
    """MLM fine-tuning adds <|mask|>; the export carries the 1-larger vocabulary and transformers
    computes the fine-tuned model's features."""
    from transformers import AutoTokenizer, CLIPModel

    result = train(_init_config(setup, "hierarchy=false", "loss.mlm_weight=1.0", init="clip"), tmp_path / "run")
    model, tok = hiclip.load(result.final)
    report = hiclip.export_hf(result.final, tmp_path / "hf")
    assert report.swapped_ids is None and not report.warnings
    clip, clip_tok = CLIPModel.from_pretrained(tmp_path / "hf").eval(), AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert clip.config.text_config.vocab_size == tok.vocab_size == len(clip_tok) and clip_tok.mask_token == "<|mask|>"
    batch = tok(TEXTS)
    hf = clip_tok(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    assert torch.equal(batch.input_ids, hf["input_ids"])
    with torch.no_grad():
        theirs = clip.get_text_features(**hf)
        torch.testing.assert_close(getattr(theirs, "pooler_output", theirs),
                                   model.encode_text(batch.input_ids, batch.attention_mask), rtol=0, atol=1e-5)
