"""Image transforms and the torch dataset: shapes, ranges, determinism, caption sampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hiclip.data import ImageTextDataset, caption_index, collate_image_text, open_dataset
from hiclip.data.shapes import ShapesConfig, generate_dataset
from hiclip.data.transforms import (
    CLIP_MEAN,
    AugmentConfig,
    CenterCrop,
    ColorJitter,
    GaussianBlur,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
    denormalize,
    eval_transform,
    train_transform,
)
from hiclip.errors import HiCLIPError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes_torch")
    generate_dataset(out, ShapesConfig(n=8, seed=2))
    return open_dataset(out, check_trees=False)  # trees are not used here; skips importing nltk


def picture(w: int = 40, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_eval_transform_shape_and_normalisation():
    out = eval_transform(24)(picture())
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    grey = Image.new("RGB", (10, 10), tuple(round(255 * m) for m in CLIP_MEAN))
    assert eval_transform(10)(grey).abs().max() < 0.01  # the mean colour maps to ~0


def test_resize_keeps_aspect_and_center_crop_is_central():
    resized = Resize(15)(picture(40, 30))
    assert resized.size == (20, 15)
    image = Image.fromarray(np.arange(25, dtype=np.uint8).reshape(5, 5))
    assert np.asarray(CenterCrop(3)(image)).tolist() == [[6, 7, 8], [11, 12, 13], [16, 17, 18]]


def test_to_tensor_range_and_denormalize_round_trip():
    t = ToTensor()(picture())
    assert t.shape == (3, 30, 40) and 0.0 <= t.min() and t.max() <= 1.0
    assert torch.allclose(denormalize(Normalize()(t)), t, atol=1e-6)


def test_random_transforms_follow_the_generator():
    view = train_transform(32, AugmentConfig(hflip=0.5))
    image = picture()
    a = view(image, generator=torch.Generator().manual_seed(7))
    b = view(image, generator=torch.Generator().manual_seed(7))
    outs = {view(image, generator=torch.Generator().manual_seed(s)).sum().item() for s in range(6)}
    assert torch.equal(a, b) and len(outs) > 1
    torch.manual_seed(3)
    c = view(image)
    torch.manual_seed(3)
    assert torch.equal(c, view(image))  # without a generator: torch's global one


def test_random_resized_crop_box_is_inside_and_within_scale():
    crop = RandomResizedCrop(16, scale=(0.3, 0.6))
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        left, top, right, bottom = crop.box(40, 30, g)
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 30
        assert 0.25 * 1200 <= (right - left) * (bottom - top) <= 0.66 * 1200
    assert crop(picture(), g).size == (16, 16)


def test_flip_grayscale_blur_and_jitter():
    image = picture()
    flipped = RandomHorizontalFlip(1.0)(image)
    assert np.array_equal(np.asarray(flipped), np.asarray(image)[:, ::-1])
    assert RandomHorizontalFlip(0.0)(image) is image
    t = ToTensor()(image)
    grey = RandomGrayscale(1.0)(t)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    blurred = GaussianBlur((1.5, 1.5), p=1.0)(t)
    assert blurred.shape == t.shape and blurred.std() < t.std()
    flat = torch.full((3, 8, 8), 0.5)
    assert torch.allclose(GaussianBlur((2.0, 2.0), p=1.0)(flat), flat, atol=1e-6)
    jittered = ColorJitter(p=1.0)(t, generator=torch.Generator().manual_seed(0))
    assert jittered.shape == t.shape and 0 <= jittered.min() and jittered.max() <= 1
    assert not torch.equal(jittered, t)
    assert torch.allclose(ColorJitter(0, 0, 0, 0, p=1.0)(t), t)


def test_image_text_dataset_items_and_collate(shapes):
    ds = ImageTextDataset(shapes, eval_transform(64), with_negatives=True)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64)
    assert item["caption"] in shapes[0].captions and item["negatives"] == shapes[0].negatives
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_image_text)))
    assert batch["image"].shape == (4, 3, 64, 64) and len(batch["caption"]) == 4
    assert batch["index"].tolist() == [0, 1, 2, 3] and len(batch["negatives"]) == 4


def test_views_and_caption_policies(shapes):
    views = ImageTextDataset(shapes, train_transform(64), n_views=2, seed=1)
    item = views[2]
    assert isinstance(item["image"], list) and len(item["image"]) == 2
    assert not torch.equal(item["image"][0], item["image"][1])
    assert torch.equal(views[2]["image"][1], item["image"][1])  # same (seed, epoch, index, view)
    batch = collate_image_text([views[0], views[1]])
    assert [v.shape for v in batch["image"]] == [(2, 3, 64, 64)] * 2
    everything = ImageTextDataset(shapes, eval_transform(64), caption_policy="all")
    assert everything[1]["caption"] == shapes[1].captions
    first = ImageTextDataset(shapes, eval_transform(64), caption_policy="first")
    assert first[1]["caption"] == shapes[1].captions[0]
    with pytest.raises(HiCLIPError, match="caption_policy"):
        ImageTextDataset(shapes, caption_policy="longest")


def test_caption_choice_depends_only_on_seed_epoch_index(shapes):
    ds = ImageTextDataset(shapes, eval_transform(64), seed=4)
    chosen = {}
    for epoch in range(6):
        ds.set_epoch(epoch)
        chosen[epoch] = [ds.caption_index(i) for i in range(len(ds))]
    again = ImageTextDataset(shapes, eval_transform(64), seed=4)
    again.set_epoch(3)
    assert [again[i]["caption_index"] for i in range(len(again))] == chosen[3]
    assert len({tuple(v) for v in chosen.values()}) > 1  # changes across epochs
    counts = np.bincount([caption_index(0, e, 5, 2) for e in range(400)], minlength=2)
    assert counts.min() > 150  # both captions are used about equally
