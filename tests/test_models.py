"""Backbone and projector shapes, stems, channels_last, config errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bsstudy.config import compose
from bsstudy.errors import UserError
from bsstudy.models import SSLModel, build_backbone, build_projector


def _model_cfg(name: str):
    return compose([f"model={name}"]).model


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_small_cnn_shapes(channels, size):
    torch.manual_seed(0)
    net = build_backbone(_model_cfg("small_cnn"), channels, size)
    assert net.feature_dim == 256
    assert net(torch.randn(4, channels, size, size)).shape == (4, 256)
    custom = build_backbone({"name": "small_cnn", "width": 8, "feature_dim": 48}, channels, size)
    assert custom.feature_dim == 48 and custom(torch.randn(2, channels, size, size)).shape == (2, 48)


@pytest.mark.slow
@pytest.mark.parametrize("cfg_name,channels,size,feat", [
    ("resnet18_cifar", 3, 16, 512),
    ("resnet18_cifar", 1, 12, 512),
    ("resnet18", 3, 32, 512),
    ("resnet18", 1, 28, 512),
    ("resnet50", 3, 32, 2048),
])
def test_resnet_shapes_and_stems(cfg_name, channels, size, feat):
    torch.manual_seed(0)
    net = build_backbone(_model_cfg(cfg_name), channels, size)
    assert net.feature_dim == feat
    with torch.no_grad():
        assert net(torch.randn(2, channels, size, size)).shape == (2, feat)
    conv1 = net.net.conv1
    assert conv1.in_channels == channels
    if _model_cfg(cfg_name).stem == "cifar":
        assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and isinstance(net.net.maxpool, nn.Identity)
    else:
        assert conv1.kernel_size == (7, 7) and conv1.stride == (2, 2) and isinstance(net.net.maxpool, nn.MaxPool2d)
    assert isinstance(net.net.fc, nn.Identity)


@pytest.mark.parametrize("layers,bn", [(1, True), (2, True), (3, True), (3, False)])
def test_projector_shapes_and_structure(layers, bn):
    proj = build_projector(64, {"layers": layers, "hidden_dim": 32, "out_dim": 16, "batch_norm": bn})
    assert proj(torch.randn(5, 64)).shape == (5, 16)
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert linears[0].in_features == 64 and linears[-1].out_features == 16
    assert sum(isinstance(m, nn.BatchNorm1d) for m in proj) == (layers - 1 if bn else 0)
    assert sum(isinstance(m, nn.ReLU) for m in proj) == layers - 1
    assert isinstance(proj[-1], nn.Linear) and proj[-1].bias is not None  # last layer plain


def test_ssl_model_forward_with_method_projector():
    cfg = compose(["method=simclr", "model=small_cnn", "dataset=fashion_mnist"])
    backbone = build_backbone(cfg.model, cfg.dataset.channels, cfg.dataset.image_size)
    model = SSLModel(backbone, build_projector(backbone.feature_dim, cfg.method.projector))
    feats, emb = model(torch.randn(6, 1, 28, 28))
    assert feats.shape == (6, 256) and emb.shape == (6, cfg.method.projector.out_dim)


def test_channels_last_gives_same_output():
    torch.manual_seed(0)
    model = SSLModel(build_backbone({"name": "small_cnn", "width": 8, "feature_dim": 32}, 3, 32),
                     build_projector(32, {"layers": 2, "hidden_dim": 16, "out_dim": 8, "batch_norm": True})).eval()
    x = torch.randn(4, 3, 32, 32)
    f1, z1 = model(x)
    model = model.to(memory_format=torch.channels_last)
    f2, z2 = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(f1, f2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(z1, z2, atol=1e-5, rtol=1e-4)


def test_model_config_errors():
    with pytest.raises(UserError, match="unknown model"):
        build_backbone({"name": "vit"}, 3, 32)
    with pytest.raises(UserError, match="feature_dim"):
        build_backbone({"name": "resnet18", "stem": "cifar", "feature_dim": 100}, 3, 32)
    with pytest.raises(UserError, match="stem"):
        build_backbone({"name": "resnet18", "stem": "tiny", "feature_dim": 512}, 3, 32)
    with pytest.raises(UserError, match="layers"):
        build_projector(8, {"layers": 0, "hidden_dim": 4, "out_dim": 4, "batch_norm": True})


def test_predictor_and_predict_forward():
    """The predictor maps embeddings back to their width; forward(predict=True) adds its output; SimSiam's
    projector option out_batch_norm ends in an affine-free BatchNorm; a model without predictor refuses."""
    from bsstudy.models import build_predictor

    torch.manual_seed(0)
    bb = build_backbone({"name": "small_cnn", "width": 4, "feature_dim": 16}, 1, 28)
    proj = build_projector(16, {"layers": 3, "hidden_dim": 32, "out_dim": 24, "batch_norm": True,
                                "out_batch_norm": True})
    assert isinstance(proj[-1], nn.BatchNorm1d) and not proj[-1].affine and proj[-2].bias is None
    pred = build_predictor(24, {"layers": 2, "hidden_dim": 6, "batch_norm": True})
    assert [m.out_features for m in pred if isinstance(m, nn.Linear)] == [6, 24]
    model = SSLModel(bb, proj, pred)
    f, z, p = model(torch.randn(5, 1, 28, 28), predict=True)
    assert f.shape == (5, 16) and z.shape == p.shape == (5, 24)
    f2, z2 = model(torch.randn(5, 1, 28, 28))
    assert z2.shape == (5, 24)
    plain = SSLModel(bb, proj)
    assert not any(k.startswith("predictor") for k in plain.state_dict())
    with pytest.raises(ValueError, match="predictor"):
        plain(torch.randn(2, 1, 28, 28), predict=True)
    with pytest.raises(UserError, match="predictor needs layers"):
        build_predictor(24, {"layers": 0, "hidden_dim": 6, "batch_norm": True})
