"""Retrieval and zero-shot metrics on hand-made similarity matrices."""
from __future__ import annotations

import math

import pytest
import torch

from hiclip.errors import HiCLIPError

from hiclip.evaluate import (
    best_positive_rank,
    class_name,
    retrieval_chance,
    retrieval_metrics,
    zero_shot_accuracy,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_perfect_similarity_scores_600() -> None:
    owners = [0, 0, 1, 1, 2, 2]
    sim = torch.tensor([[1.0 if o == i else 0.0 for o in owners] for i in range(3)])
    m = retrieval_metrics(sim, owners)
    assert m["rsum"] == pytest.approx(600.0)
    assert m["n_images"] == 3 and m["n_captions"] == 6


def test_hand_computed_ranks_two_captions_per_image() -> None:
    # 3 images x 6 captions; caption j belongs to image j // 2.
    owners = [0, 0, 1, 1, 2, 2]
    sim = torch.tensor([
        # c0   c1   c2   c3   c4   c5
        [0.1, 0.8, 0.9, 0.0, -0.1, 0.0],  # image 0: best own caption c1 is 2nd -> R@1 miss, R@5 hit
        [0.0, 0.0, 0.2, 0.1, 0.5, 0.4],  # image 1: own best c2 (0.2) behind c4, c5 -> rank 2
        [0.3, 0.0, 0.0, 0.0, 0.0, 0.7],  # image 2: c5 first -> hit at 1
    ])
    m = retrieval_metrics(sim, owners, ks=(1, 2, 3))
    assert m["i2t_R@1"] == pytest.approx(100 / 3)
    assert m["i2t_R@2"] == pytest.approx(200 / 3)
    assert m["i2t_R@3"] == pytest.approx(100.0)
    # Caption queries (columns): c0 -> image ranking by [0.1, 0.0, 0.3]: own image 0 is 2nd.
    # c1 [0.8,0,0] 1st; c2 [0.9,0.2,0] own 1 is 2nd; c3 [0,0.1,0] 1st; c4 [-0.1,0.5,0] own 2 is
    # 2nd; c5 [0,0.4,0.7] 1st.
    assert m["t2i_R@1"] == pytest.approx(50.0)
    assert m["t2i_R@2"] == pytest.approx(100.0)
    assert m["rsum"] == pytest.approx(100 / 3 + 200 / 3 + 100 + 50 + 100 + 100)


def test_ties_count_against_the_query() -> None:
    sim = torch.zeros(4, 4)
    m = retrieval_metrics(sim, [0, 1, 2, 3], ks=(1, 4))
    assert m["i2t_R@1"] == 0.0 and m["t2i_R@1"] == 0.0
    assert m["i2t_R@4"] == 100.0
    ranks = best_positive_rank(torch.tensor([[0.5, 0.5, 0.1]]), torch.tensor([[True, False, False]]))
    assert ranks.tolist() == [1]


def test_images_without_captions_are_not_queries() -> None:
    sim = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    m = retrieval_metrics(sim, [0, 1], ks=(1,))
    assert m["n_images"] == 2 and m["i2t_R@1"] == 100.0 and m["t2i_R@1"] == 100.0


def test_bad_owner_vectors_raise() -> None:
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(2, 2), [0, 5])


def test_random_similarity_matches_chance() -> None:
    g = torch.Generator().manual_seed(0)
    n, c = 200, 2
    owners = [i // c for i in range(n * c)]
    runs = [retrieval_metrics(torch.rand(n, n * c, generator=g), owners, ks=(10,)) for _ in range(5)]
    chance = retrieval_chance(n, c, 10)
    assert chance["t2i"] == pytest.approx(5.0)
    assert chance["i2t"] == pytest.approx(100 * (1 - math.comb(398, 10) / math.comb(400, 10)))
    assert sum(r["t2i_R@10"] for r in runs) / 5 == pytest.approx(chance["t2i"], abs=2.0)
    assert sum(r["i2t_R@10"] for r in runs) / 5 == pytest.approx(chance["i2t"], abs=3.0)


def test_zero_shot_accuracy_and_class_names() -> None:
    classes = torch.eye(3)
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 1.0], [0.2, 0.1, 0.0]])
    targets = torch.tensor([0, 1, 2, 1])
    result = zero_shot_accuracy(images, classes, targets, ks=(1, 2))
    assert result["top1"] == pytest.approx(75.0)
    assert result["top2"] == pytest.approx(100.0)
    assert result["mean_per_class"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    assert class_name(3) == "three" and class_name("light_blue") == "light blue"


def test_zero_shot_ties_break_the_same_way_whatever_the_thread_count() -> None:
    """Classes with one embedding (names of unknown words) tie; the first class index takes them."""
    from hiclip.evaluate import tied_classes

    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(300, 8, generator=g), dim=-1)
    base = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    classes = torch.cat([base, base[2:].repeat(4, 1)])  # classes 2..6 are one embedding
    targets = torch.randint(0, 7, (300,), generator=g)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(zero_shot_accuracy(images, classes, targets))
    finally:
        torch.set_num_threads(threads)
    assert results[0] == results[1]
    logits = images @ classes.t()
    expected = torch.where(logits[:, :3].argmax(1) == 2, torch.tensor(2), logits[:, :3].argmax(1))
    assert results[0]["top1"] == pytest.approx(100.0 * (expected == targets).float().mean().item())
    names = ["a", "b", "c", "d", "e", "f", "g"]
    assert tied_classes(classes, names) == [["c", "d", "e", "f", "g"]]
    assert tied_classes(base, names[:3]) == []


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_retrieval_refuses_captions_over_the_learned_limit(positions) -> None:
    import hiclip
    from hiclip.evaluate import EvalSet, evaluate_retrieval

    captions = [["a red square", "a blue circle"], ["two stars", " ".join(["star"] * 40)]]
    tokenizer = hiclip.HiCLIPTokenizer.train_word_level([c for caps in captions for c in caps],
                                                        context_length=32 if positions == "learned" else None)
    torch.manual_seed(0)
    model = hiclip.create_model("hiclip-tiny", vocab_size=tokenizer.vocab_size, text={"positions": positions}).eval()
    data = EvalSet(ids=["a", "b"], captions=captions, labels=[{}, {}],
                   image_features=torch.nn.functional.normalize(torch.randn(2, 128), dim=-1),
                   name="caps:test", origins=["manifest.jsonl:1", "manifest.jsonl:2"])
    if positions == "learned":
        with pytest.raises(HiCLIPError, match=r"^manifest.jsonl:2: caption 1: 42 tokens with SOT and EOT, "
                                              r"over the model's limit of 32"):
            evaluate_retrieval(model, tokenizer, data, torch.device("cpu"))
    else:
        with torch.no_grad():
            metrics = evaluate_retrieval(model, tokenizer, data, torch.device("cpu"))
        assert 0 <= metrics["t2i_R@1"] <= 100
