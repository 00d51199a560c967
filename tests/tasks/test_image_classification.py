"""Image classification: PIL/torch transforms, the CIFAR-100 and DomainNet loaders, a federated ViT run."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fedhello.data import load_source
from fedhello.engines import ENGINES
from fedhello.server import build_federation
from fedhello.tasks.image_classification import ImageTransform, random_resized_crop_box


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_train_transform_is_seeded_augmented_and_normalised():
    transform = ImageTransform((32, 32), [0.5] * 3, [0.5] * 3, train=True)
    image = _image(48, 40)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    again = transform(image)
    torch.manual_seed(1)
    other = transform(image)
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= -1.0 and first.max() <= 1.0


def test_eval_transform_takes_the_center_of_the_shorter_side():
    image = _image(64, 32, seed=1)
    out = ImageTransform((32, 32), [0.5] * 3, [0.5] * 3, train=False)(image)
    center = np.asarray(image, dtype=np.float32)[:, 16:48] / 255.0
    expected = torch.from_numpy((center - 0.5) / 0.5).permute(2, 0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_random_resized_crop_box_stays_inside_the_image():
    torch.manual_seed(0)
    areas = []
    for _ in range(300):
        left, top, right, bottom = random_resized_crop_box(50, 30)
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30
        areas.append((right - left) * (bottom - top) / 1500)
    assert min(areas) < 0.3 and max(areas) > 0.7, "crops should cover a wide range of scales"


def test_cifar100_loader_maps_the_hub_schema(vit_config):
    splits = load_source(vit_config.data, seed=0)
    assert set(splits) == {"train", "test"} and len(splits["train"]) == 240 and len(splits["test"]) == 40
    assert set(splits["train"].column_names) == {"image", "label"}
    assert splits["train"].features["label"].num_classes == 10
    assert isinstance(splits["train"][0]["image"], Image.Image)


def test_vit_federated_run_trains_only_planned_layers(vit_config, tmp_path):
    run_dir = tmp_path / "run"
    summary = ENGINES.get("local")().run(vit_config, run_dir, show_progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2]
    # the colour cue per class is learnable: the test loss falls and accuracy clears chance (0.1) by far
    assert records[1]["loss"] < records[0]["loss"] - 0.1, [r["loss"] for r in records]
    assert summary["best_accuracy"] == max(r["accuracy"] for r in records) >= 0.3
    sizes = {}
    for record in records:
        for client in record["clients"]:
            assert len(client["layers"]) == vit_config.tiers[client["tier"]].layers
            assert np.isfinite(client["train_loss"])
            sizes.setdefault(len(client["layers"]), set()).add(client["bytes_up"])
    # upload grows with the number of trained layers: q and v LoRA factors per layer plus the head
    per_layer = 2 * 4 * (32 + 32) * 4  # (q, v) x r=4 x (in+out) x fp32 bytes
    head = (32 * 10 + 10) * 4
    for layers, observed in sizes.items():
        assert observed == {float(layers * per_layer + head)}


def test_domainnet_folder_loader_and_feature_skew(vit_config, tiny_domainnet_dir):
    config = vit_config.model_copy(deep=True)
    config.data.source, config.data.path = "domainnet", str(tiny_domainnet_dir)
    splits = load_source(config.data, seed=0)
    assert len(splits["train"]) == 6 * 3 * 6 and len(splits["test"]) == 6 * 3 * 2  # official split files
    assert set(splits["test"]["domain"]) == {"clipart", "infograph", "painting", "quickdraw", "real", "sketch"}

    config.partition.kind, config.federation.num_clients = "domain", 12
    federation = build_federation(config)
    by_domain: dict[str, list[set]] = {}
    for cid in range(12):
        data = federation.client_data(cid)
        domains = set(data["domain"])
        assert len(domains) == 1, "feature skew: one domain per client"
        by_domain.setdefault(domains.pop(), []).append(set(federation.partitioner.partition_indices()[cid].tolist()))
    assert len(by_domain) == 6 and all(len(parts) == 2 for parts in by_domain.values())
    for first, second in by_domain.values():
        assert not first & second, "clients of one domain share no sample"


@pytest.mark.parametrize("classes", [1, 2])
def test_domainnet_feature_and_label_skew(vit_config, tiny_domainnet_dir, classes):
    config = vit_config.model_copy(deep=True)
    config.data.source, config.data.path = "domainnet", str(tiny_domainnet_dir)
    config.partition.kind, config.partition.classes_per_client = "domain_pathological", classes
    config.partition.min_size, config.federation.num_clients = 1, 12
    federation = build_federation(config)
    for cid in range(12):
        data = federation.client_data(cid)
        assert len(set(data["domain"])) == 1 and len(set(data["labels"])) == classes
