"""The efficiency levers as parts: Muon + AdamW, mimetic attention init, convolutional tokenizers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vitkit.models.mimetic import mimetic_init_
from vitkit.models.tokenizers import CCTTokenizer, EarlyConvStem, build_tokenizer, tokenizer_layers
from vitkit.training.muon import Muon, MuonAdamW, is_hidden_matrix, orthogonalise


class TinyBlocks(nn.Module):
    """Named like a ViT: an embedding, one block with two matrices and a bias, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(6, 8)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks[0](self.patch_embed(x)))


def make_optimizer(model: nn.Module, lr: float = 1e-2) -> MuonAdamW:
    hidden = [p for n, p in model.named_parameters() if is_hidden_matrix(n, p)]
    groups = [{"params": list(model.parameters()), "weight_decay": 0.01, "lr_scale": 1.0}]
    return MuonAdamW(groups, hidden, lr=lr)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 6, generator=generator)
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_muon_owns_the_block_matrices_and_adamw_the_rest():
    model = TinyBlocks()
    optimizer = make_optimizer(model)
    muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    adam = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {id(model.blocks[0][0].weight), id(model.blocks[0][2].weight)}
    assert adam == {id(p) for p in model.parameters()} - muon


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_in_bf16_is_torchs_muon_with_match_rms_adamw(nesterov):
    torch.manual_seed(0)
    ours, theirs = nn.Linear(16, 24, bias=False), nn.Linear(16, 24, bias=False)
    theirs.load_state_dict(ours.state_dict())
    mine = Muon(ours.parameters(), lr=0.02, weight_decay=0.1, nesterov=nesterov, ns_dtype=torch.bfloat16)
    reference = torch.optim.Muon(
        theirs.parameters(), lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn="match_rms_adamw"
    )
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(5, 16, generator=generator)
        for model, optimizer in ((ours, mine), (theirs, reference)):
            model(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    assert mine.state_dict()["state"][0].keys() == reference.state_dict()["state"][0].keys()  # same layout


@pytest.mark.parametrize("shape", [(8, 32), (32, 8)])
def test_newton_schulz_brings_every_singular_value_near_one_in_either_dtype(shape):
    update = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.bfloat16):
        out = orthogonalise(update, dtype)
        assert out.dtype == dtype and out.shape == update.shape
        singular = torch.linalg.svdvals(out.float())
        assert singular.min() > 0.5 and singular.max() < 1.3, singular  # the quintic's US'V^T, S' in ~(0.6, 1.2)
    fp32, bf16 = orthogonalise(update, torch.float32), orthogonalise(update, torch.bfloat16).float()
    assert (fp32 - bf16).abs().max() < 0.05  # one iteration, two precisions


def test_newton_schulz_runs_in_bf16_only_where_the_run_computes_in_bf16():
    import vitkit
    from vitkit.training.config import OptimConfig
    from vitkit.training.optim import build_optimizer

    model = vitkit.create_model("mu/4", img_size=16, num_classes=3, depth=1)
    config = OptimConfig(optimizer="muon")
    assert build_optimizer(model, None, config, "bf16").muon.ns_dtype == torch.bfloat16
    assert build_optimizer(model, None, config, "fp32").muon.ns_dtype == torch.float32
    assert build_optimizer(model, None, config).muon.ns_dtype == torch.float32


def test_a_learning_rate_set_on_the_groups_reaches_both_halves():
    optimizer = make_optimizer(TinyBlocks())
    for group in optimizer.param_groups:
        group["lr"] = 0.123
    assert all(g["lr"] == 0.123 for g in optimizer.muon.param_groups + optimizer.adamw.param_groups)


def test_muon_steps_move_every_parameter_and_resume_exactly():
    torch.manual_seed(0)
    model = TinyBlocks()
    before = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(model)
    train_steps(model, optimizer, 3)
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert_resumes_exactly(model, optimizer, make_optimizer, steps=2)  # saved after 3 steps


def assert_resumes_exactly(model: nn.Module, optimizer: torch.optim.Optimizer, make, steps: int) -> None:
    """Save model and optimizer, train `steps` more; a copy restored from the saved state must land on the same
    weights bit for bit."""
    saved_model, saved_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    train_steps(model, optimizer, steps, seed=1)
    resumed = TinyBlocks()
    resumed.load_state_dict(saved_model)
    resumed_optimizer = make(resumed)
    resumed_optimizer.load_state_dict(saved_state)
    train_steps(resumed, resumed_optimizer, steps, seed=1)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


def test_muon_needs_block_matrices():
    model = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="muon needs 2D weights inside encoder blocks"):
        MuonAdamW([{"params": list(model.parameters())}], [], lr=1e-3)


def test_mimetic_init_gives_identity_like_attention_products():
    dim, heads = 64, 4
    qkv, proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
    mimetic_init_(qkv, proj, heads, generator=torch.Generator().manual_seed(0))
    q, k, v = qkv.weight.detach().double().chunk(3)
    head_dim = dim // heads
    for h in range(heads):
        rows = slice(h * head_dim, (h + 1) * head_dim)
        product = q[rows].T @ k[rows]  # W_q^T W_k: its diagonal carries the +beta identity
        assert product.diagonal().mean() > 0.5 * product.abs().mean() and product.diagonal().mean() > 0.1
    vo = proj.weight.detach().double() @ v  # W_o W_v = alpha Z - beta I, exactly (full rank)
    assert abs(vo.diagonal().mean() + 0.4) < 0.05
    off = vo - torch.diag(vo.diagonal())
    assert abs(off.std() - 0.4 / dim**0.5) < 0.01


def test_cct_tokenizer_stride_and_width():
    tokenizer = CCTTokenizer(3, 96, layers=2)
    out = tokenizer.forward_features(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 96, 8, 8) and not tokenizer.needs_projection
    assert [m.out_channels for m in tokenizer.modules() if isinstance(m, nn.Conv2d)] == [64, 96]


def test_early_conv_stem_doubles_channels_to_the_width():
    stem = EarlyConvStem(3, 192, layers=3)
    out = stem.forward_features(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 192, 4, 4) and stem.needs_projection
    assert [m.out_channels for m in stem.modules() if isinstance(m, nn.Conv2d)] == [48, 96, 192]


def test_tokenizer_names_and_strides():
    assert tokenizer_layers("cct2", (4, 4)) == 2 and isinstance(build_tokenizer("conv3", (8, 8), 3, 64), EarlyConvStem)
    with pytest.raises(ValueError, match="stem cct2 has total stride 4, so it needs patch size 4, got 8x8"):
        tokenizer_layers("cct2", (8, 8))


def test_multicrop_views_are_the_image_its_mirror_and_one_pixel_shifts():
    from vitkit.inference.tta import tta_logits, tta_views

    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    views = tta_views(images, "multicrop")
    assert len(views) == 6 and abs(sum(w for _, w in views) - 1) < 1e-12
    assert all(view.shape == images.shape for view, _ in views)
    torch.testing.assert_close(views[2][0][..., 1:, 1:], images[..., :-1, :-1])  # moved down-right
    torch.testing.assert_close(views[3][0][..., :-1, :-1], images[..., 1:, 1:])  # moved up-left
    mean = tta_logits(lambda x: {"cls": x.mean(dim=(1, 2, 3))[:, None]}, images, "flip")
    torch.testing.assert_close(mean["cls"], images.mean(dim=(1, 2, 3))[:, None])
    with pytest.raises(ValueError, match="unknown test-time augmentation 'crops'"):
        tta_views(images, "crops")


def test_patch_dropout_keeps_prefix_tokens_and_a_share_of_patches_in_training_only():
    import vitkit
    from vitkit.models.vit import drop_patches

    tokens = torch.arange(2 * 9 * 4, dtype=torch.float32).reshape(2, 9, 4)  # 1 prefix + 8 patches
    kept = drop_patches(tokens, 1, 0.5, training=True)
    assert kept.shape == (2, 5, 4) and torch.equal(kept[:, 0], tokens[:, 0])
    for b in range(2):  # each kept row is one of that image's patches, in their original order
        rows = [int(r[0]) // 4 - 9 * b for r in kept[b, 1:]]
        assert rows == sorted(rows) and len(set(rows)) == 4 and min(rows) >= 1
    assert torch.equal(drop_patches(tokens, 1, 0.5, training=False), tokens)
    model = vitkit.create_model("mu/4", img_size=16, num_classes=3, depth=1, patch_drop=0.75)
    assert model.train().embed(torch.randn(2, 3, 16, 16))[0].shape[1] == 1 + 4  # 16 patches -> 4, + class token
    assert model.eval().embed(torch.randn(2, 3, 16, 16))[0].shape[1] == 1 + 16


@pytest.mark.parametrize("name", ["cct2+Ti/4", "conv2+Ti/4", "conv3+Ti/8"])
def test_tokenizer_hybrids_build_train_and_round_trip(name, tmp_path):
    import vitkit

    model = vitkit.create_model(name, img_size=32, num_classes=3, depth=1, attn_init="mimetic")
    images = torch.randn(2, 3, 32, 32)
    model(images).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    vitkit.save(model.eval(), tmp_path / "m")
    loaded = vitkit.load(tmp_path / "m").eval()
    assert loaded.config.stem == name.split("+")[0] and loaded.config.attn_init == "mimetic"
    torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_muon_is_an_optimizer_choice_of_the_recipe():
    import vitkit
    from vitkit.training.config import OptimConfig
    from vitkit.training.optim import build_optimizer

    model = vitkit.create_model("mu/4", img_size=16, num_classes=3, depth=2)
    optimizer = build_optimizer(model, None, OptimConfig(optimizer="muon", lr=1e-3))
    assert isinstance(optimizer, MuonAdamW)
    owned = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    assert owned == {id(p) for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}


def test_eval_tta_replaces_eval_flip_and_old_runs_keep_theirs():
    from vitkit.training.config import TrainConfig

    old = TrainConfig.from_dict({"run": {"eval_flip": True}})
    assert old.run.eval_tta == "flip"
    assert TrainConfig.from_dict({"run": {"eval_flip": False}}).run.eval_tta == "none"
    assert TrainConfig.from_dict({"run": {"eval_tta": "multicrop"}}).run.eval_tta == "multicrop"
    with pytest.raises(ValueError, match="run.eval_tta must be one of"):
        TrainConfig.from_dict({"run": {"eval_tta": "crops"}})


def test_multicrop_evaluation_averages_the_six_views():
    import vitkit
    from vitkit.data import EvalTransform, TensorSource
    from vitkit.inference import evaluate
    from vitkit.inference.tta import tta_views

    torch.manual_seed(0)
    model = vitkit.create_model("Mini/4", img_size=16, num_classes=3, depth=1, zero_init_head=False).eval()
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    source = TensorSource(images, torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"])
    transform = EvalTransform(16, (0.5,) * 3, (0.5,) * 3)
    cpu = torch.device("cpu")
    result = evaluate(model, source, transform, batch_size=4, device=cpu, tta="multicrop", keep_logits=True)
    with torch.no_grad():
        inputs = transform(images)
        want = sum(model(view) * weight for view, weight in tta_views(inputs, "multicrop"))
    torch.testing.assert_close(result.logits, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_adamw_is_fused_where_torch_can_and_steps_like_the_per_tensor_loop(name):
    import vitkit
    from vitkit.training.config import OptimConfig
    from vitkit.training.distributed import clean_name
    from vitkit.training.muon import hidden_matrices
    from vitkit.training.optim import TORCH_VERSION, build_optimizer, parameter_groups

    torch.manual_seed(0)
    model = vitkit.create_model("mu/4", img_size=16, num_classes=3, depth=2)
    initial, reference = copy.deepcopy(model.state_dict()), copy.deepcopy(model)
    fused = build_optimizer(model, None, OptimConfig(optimizer=name, lr=1e-2, weight_decay=0.05))
    assert (fused.adamw if name == "muon" else fused).defaults["fused"] is (True if TORCH_VERSION >= (2, 4) else None)
    groups = parameter_groups(reference, 0.05)
    if name == "muon":
        hidden = hidden_matrices(reference, clean_name)
        loop = MuonAdamW(groups, hidden, lr=1e-2, ns_dtype=torch.float32, fused=False)
    else:
        loop = torch.optim.AdamW(groups, lr=1e-2, fused=False)
    for net, optimizer in ((model, fused), (reference, loop)):
        # One step: after it the two differ by rounding, which Adam magnifies where gradients are ~0 (key biases).
        logits = net(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
        nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
        optimizer.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[key], rtol=1e-5, atol=1e-6, msg=key)
    assert all(not torch.equal(model.state_dict()[k], initial[k]) for k in ("head.weight", "blocks.0.mlp.fc1.weight"))


def test_ranger_is_radam_pulled_back_to_its_slow_weights_every_k_steps():
    from vitkit.training.ranger import Ranger

    torch.manual_seed(0)
    model = TinyBlocks()
    start = copy.deepcopy(model.state_dict())
    radam_model = copy.deepcopy(model)
    groups = [{"params": list(model.parameters()), "weight_decay": 0.01}]
    ranger = Ranger(groups, lr=1e-2, k=3, alpha=0.5)
    radam = torch.optim.RAdam(
        radam_model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01, decoupled_weight_decay=True
    )
    # Two fast steps are plain RAdam; the third lands half-way between the start and RAdam's third step.
    train_steps(model, ranger, 2)
    train_steps(radam_model, radam, 2)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, radam_model.state_dict()[key])
    train_steps(model, ranger, 1, seed=1)
    train_steps(radam_model, radam, 1, seed=1)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, start[key] + 0.5 * (radam_model.state_dict()[key] - start[key]))


def test_ranger_resumes_exactly_with_its_slow_weights():
    from vitkit.training.ranger import Ranger

    def make(model: nn.Module) -> Ranger:
        return Ranger([{"params": list(model.parameters()), "weight_decay": 0.01}], lr=1e-2, k=3)

    torch.manual_seed(0)
    model = TinyBlocks()
    optimizer = make(model)
    train_steps(model, optimizer, 4)  # mid-way through a Lookahead period: the slow weights differ from the fast
    assert_resumes_exactly(model, optimizer, make, steps=5)


def test_muon_convs_owns_the_stems_kernels_past_the_first():
    import vitkit
    from vitkit.training.config import OptimConfig
    from vitkit.training.optim import build_optimizer

    model = vitkit.create_model("C20+mu/4", img_size=16, num_classes=3, depth=1)
    plain = build_optimizer(model, None, OptimConfig(optimizer="muon"))
    with_convs = build_optimizer(model, None, OptimConfig(optimizer="muon", muon_convs=True))
    owned = {id(p) for g in with_convs.muon.param_groups for p in g["params"]}
    kernels = {n: p for n, p in model.named_parameters() if p.ndim == 4}
    reads_image = {n for n, p in kernels.items() if p.size(1) == 3}
    assert reads_image == {"patch_embed.backbone.stem.conv.weight"}
    assert owned - {id(p) for g in plain.muon.param_groups for p in g["params"]} == {
        id(p) for n, p in kernels.items() if n not in reads_image
    }
    adam = {id(p) for g in with_convs.adamw.param_groups for p in g["params"]}
    assert id(kernels["patch_embed.backbone.stem.conv.weight"]) in adam and not adam & owned


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (12, 1, 3, 3), (8, 4, 1, 1)])  # fewer, more outputs than inputs
def test_muon_updates_a_kernel_as_the_matrix_it_applies(shape):
    torch.manual_seed(0)
    out, fan_in = shape[0], shape[1] * shape[2] * shape[3]
    kernel = nn.Parameter(torch.randn(shape))
    matrix = nn.Parameter(kernel.detach().reshape(out, fan_in).clone())
    kernel_muon = Muon([kernel], lr=0.02, weight_decay=0.1, ns_dtype=torch.float32)
    matrix_muon = Muon([matrix], lr=0.02, weight_decay=0.1, ns_dtype=torch.float32)
    for step in range(3):
        gradient = torch.randn(shape, generator=torch.Generator().manual_seed(step))
        kernel.grad, matrix.grad = gradient.clone(), gradient.reshape(out, fan_in).clone()
        kernel_muon.step()
        matrix_muon.step()
    assert kernel.shape == shape
    torch.testing.assert_close(kernel.detach().reshape(out, fan_in), matrix.detach(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="matrices and convolution kernels only"):
        vector = nn.Parameter(torch.ones(3))
        vector.grad = torch.ones(3)
        Muon([vector]).step()
