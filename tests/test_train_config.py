"""TrainConfig parsing and validation, optimiser groups, schedule and data order."""
from __future__ import annotations

import json
import math

import pytest
import torch

from hiclip.errors import HiCLIPError
from hiclip.train.config import apply_overrides, config_from_dict, load_config, parse_override
from hiclip.train.data_order import BatchPlan, sample_seed, seeded_rng
from hiclip.train.optim import WarmupCosine, build_optimizer, parameter_groups, warmup_cosine


pytestmark = pytest.mark.usefixtures("one_thread")


def test_overrides_parse_json_values_and_sections(tmp_path) -> None:
    assert parse_override("optim.lr=3e-4") == (["optim", "lr"], 3e-4)
    assert parse_override("hierarchy=false") == (["hierarchy"], False)
    assert parse_override("model=hiclip-small") == (["model"], "hiclip-small")
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"data": "/x", "optim": {"lr": 0.01}, "loss": {"mlm_weight": 0.5}}))
    config = load_config(recipe, ["optim.warmup_steps=7", "loss.hard_negatives=true",
                                  "optim.betas=[0.9, 0.95]"], batch_size=32)
    assert config.optim.lr == 0.01 and config.optim.warmup_steps == 7
    assert config.optim.betas == (0.9, 0.95)
    assert config.loss.hard_negatives and config.loss.mlm_weight == 0.5
    assert config.batch_size == 32 and config.data == "/x"


def test_shipped_recipes_load() -> None:
    for name in ("shapes-tiny", "captions-mlm"):
        config = load_config(name, ["data=/somewhere"])
        assert config.batch_size >= 1


@pytest.mark.parametrize("values, overrides, message", [
    ({"data": "/x", "bogus": 1}, [], "unknown config key 'bogus'"),
    ({"data": "/x", "optim": {"lrr": 1}}, [], "unknown config key 'optim.lrr'"),
    ({"data": "/x"}, ["batch_size=abc"], "'batch_size' must be an integer"),
    ({"data": "/x"}, ["hierarchy=1"], "'hierarchy' must be true or false"),
    ({"data": "/x"}, ["mode=vqa"], "mode must be"),
    ({}, [], "no training data"),
    ({"data": "/x"}, ["loss.simsiam_weight=0.2"], "needs image_views >= 2"),
    ({"data": "/x"}, ["batch_size=10", "accum_steps=3"], "not divisible by accum_steps"),
    ({"data": "/x"}, ["nokey"], "--set expects key=value"),
    ({"data": "/x"}, ["loss.mlm_warmup_steps=10"], "mlm_warmup_steps needs mode 'clip' and loss.mlm_weight > 0"),
    ({"data": "/x"}, ["loss.mlm_warmup_steps=-1"], "mlm_warmup_steps must be >= 0"),
    ({"data": "/x"}, ["compile_mode=graphs"], "compile_mode must be one of"),
])
def test_bad_configs_fail_with_one_line(tmp_path, values, overrides, message) -> None:
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(values))
    with pytest.raises(HiCLIPError, match=message.replace("(", r"\(")) as error:
        load_config(recipe, overrides)
    assert "\n" not in str(error.value)


def test_missing_recipe_names_shipped_ones() -> None:
    with pytest.raises(HiCLIPError, match="shapes-tiny"):
        load_config("no-such-recipe")


def test_config_round_trips_through_json() -> None:
    config = config_from_dict({"data": "/d", "optim": {"lr": 0.5}})
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_weight_decay_groups_skip_norms_biases_temperature() -> None:
    from hiclip import create_model

    model = create_model("hiclip-tiny", hierarchy=True, vocab_size=50)
    decay, no_decay = parameter_groups(model.named_parameters(), 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "logit_scale" in no_decay["names"]
    assert all("bias" not in n and "norm" not in n.lower() and ".ln" not in n
               for n in decay["names"])
    assert any(n.endswith("attn.in_proj_weight") or "qkv" in n or "attn" in n for n in decay["names"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    _, no_decay_emb = parameter_groups(model.named_parameters(), 0.1, decay_embeddings=False)
    assert "text.token_embedding.weight" in no_decay_emb["names"]


def test_warmup_then_cosine_and_resumable_state() -> None:
    assert warmup_cosine(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 1.0, min_lr=0.01) == pytest.approx(0.01)
    param = torch.nn.Parameter(torch.zeros(2, 2))
    from hiclip.train.config import OptimConfig

    opt = build_optimizer([("w", param)], OptimConfig(lr=1.0, warmup_steps=4))
    schedule = WarmupCosine(opt, 20, 4, 1.0)
    for _ in range(7):
        schedule.step()
    other = WarmupCosine(opt, 20, 4, 1.0)
    other.load_state_dict(schedule.state_dict())
    assert other.lr == schedule.lr == opt.param_groups[0]["lr"]
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-8


def test_batch_plan_shards_match_single_process() -> None:
    single = BatchPlan(50, 12, seed=3)
    assert single.steps_per_epoch == 4
    for step in range(4):
        union = []
        for rank in range(2):
            plan = BatchPlan(50, 12, seed=3, world_size=2, rank=rank)
            union.extend(plan.local_micro_batches(1, step)[0])
        assert union == single.global_batch_indices(1, step)
    assert single.permutation(0) != single.permutation(1)
    keys = list(single.keys(1, start_step=2))
    assert [i for _, i in keys[0]] == single.global_batch_indices(1, 2)
    accum = BatchPlan(50, 12, seed=3, accum_steps=3)
    assert sum(accum.local_micro_batches(0, 1), []) == single.global_batch_indices(0, 1)


def test_batch_plan_rejects_bad_sizes() -> None:
    with pytest.raises(HiCLIPError, match="larger than the training set"):
        BatchPlan(10, 16)
    with pytest.raises(HiCLIPError, match="not divisible by world size 4"):
        BatchPlan(100, 10, world_size=4)


def test_sample_seeds_are_distinct_and_rng_is_restored() -> None:
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**63 for s in seeds)
    before = torch.random.get_rng_state()
    with seeded_rng(sample_seed(0, 1, 5)):
        a = torch.rand(3)
    with seeded_rng(sample_seed(0, 1, 5)):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(before, torch.random.get_rng_state())
    assert not math.isnan(float(a.sum()))


def test_resuming_an_older_run_drops_its_retired_keys(tmp_path):
    """Run folders written before throttle_s left TrainConfig still resume without --config."""
    import json

    from hiclip.commands.train import _stored_config
    from hiclip.train.config import config_from_dict

    stored = load_config("shapes-tiny", data="shapes").to_dict()
    (tmp_path / "params.json").write_text(json.dumps({"config": {**stored, "throttle_s": 0.25}}))
    assert config_from_dict(_stored_config(tmp_path)).to_dict() == stored
