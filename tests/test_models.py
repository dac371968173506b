import pytest
import torch
from torch import nn

from noisekd.models import SeededDropout, WRNSpec, build_model, count_parameters, wide_resnet


@pytest.mark.parametrize("depth,width,expected", [(40, 2, 2_243_546), (16, 2, 691_674)])
def test_parameter_counts_match_the_published_wrns(depth, width, expected):
    assert count_parameters(wide_resnet(depth, width)) == expected


def test_block_structure_is_pre_activation_with_projection_on_the_activated_input():
    model = wide_resnet(16, 2)
    first = model.groups[0][0]
    # 16 -> 32 channels: the first block of group 1 needs a 1x1 projection; later blocks do not.
    assert isinstance(first.shortcut, nn.Conv2d) and first.shortcut.kernel_size == (1, 1)
    assert model.groups[0][1].shortcut is None
    assert model.groups[1][0].shortcut.stride == (2, 2)
    # projection sees relu(bn1(x)): zeroing bn1 (weight=bias=0) must zero the projected path
    x = torch.rand(2, 16, 8, 8)
    block = first.eval()
    with torch.no_grad():
        block.bn1.weight.zero_()
        block.bn1.bias.zero_()
        assert torch.count_nonzero(block.shortcut(torch.relu(block.bn1(x)))) == 0


def test_features_have_the_shapes_distillation_needs():
    model = wide_resnet(16, 2).eval()
    logits, feats = model(torch.rand(3, 3, 32, 32), features=True)
    assert logits.shape == (3, 10)
    assert [tuple(g.shape) for g in feats.groups] == [(3, 32, 32, 32), (3, 64, 16, 16), (3, 128, 8, 8)]
    assert feats.last is feats.groups[-1]
    assert feats.embedding.shape == (3, 128)
    assert torch.equal(model(torch.zeros(1, 3, 32, 32)), model(torch.zeros(1, 3, 32, 32)))
    # the embedding is the pooled, BN-ReLU'd last group output feeding the classifier
    emb = torch.relu(model.bn(feats.last)).mean((2, 3))
    torch.testing.assert_close(feats.embedding, emb)
    torch.testing.assert_close(logits, model.fc(emb))


def test_any_input_size_and_teacher_student_feature_compatibility():
    teacher, student = wide_resnet(40, 2).eval(), wide_resnet(16, 2).eval()
    for size in (16, 24, 32):
        x = torch.rand(2, 3, size, size)
        _, ft = teacher(x, features=True)
        _, fs = student(x, features=True)
        assert [g.shape for g in ft.groups] == [g.shape for g in fs.groups]
        assert ft.embedding.shape == fs.embedding.shape


def test_normalisation_lives_inside_the_model():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    a = build_model(WRNSpec(10, 1, mean=mean, std=std), seed=0).eval()
    b = build_model(WRNSpec(10, 1), seed=0).eval()
    x = torch.rand(2, 3, 16, 16)
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(a(x), b(xn))
    assert "mean" not in a.state_dict()  # preprocessing comes from the spec, not the weights


def test_invalid_architectures_are_refused():
    with pytest.raises(ValueError, match="6n\\+4"):
        wide_resnet(20, 2)
    with pytest.raises(ValueError, match="dropout"):
        wide_resnet(16, 2, dropout=1.0)


def test_seeded_dropout_draws_from_its_generator():
    drop = SeededDropout(0.5).train()
    x = torch.ones(1000)
    drop.generator = torch.Generator().manual_seed(3)
    a = drop(x)
    drop.generator = torch.Generator().manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 2.0}
    assert 0.4 < (a == 0).float().mean() < 0.6
    assert torch.equal(drop.eval()(x), x)


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_model(WRNSpec(10, 1), 5), build_model(WRNSpec(10, 1), 5)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = build_model(WRNSpec(10, 1), 6)
    assert not torch.equal(a.stem.weight, c.stem.weight)


def test_folded_batchnorm_computes_the_same_function_in_eval_mode():
    model = wide_resnet(16, 2, dropout=0.3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.train()
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    model.eval()
    from noisekd.models import fold_batchnorm

    folded = fold_batchnorm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 6 + 1  # bn1 of each block, final bn
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        ref_logits, ref_feat = model(x, features=True)
        logits, feat = folded(x, features=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    for a, b in zip(feat.groups + (feat.last, feat.embedding), ref_feat.groups + (ref_feat.last, ref_feat.embedding)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not model.training and all(m is not n for m, n in zip(model.parameters(), folded.parameters()))
    with pytest.raises(RuntimeError, match="folded for inference"):
        folded.train()
    for d in folded.dropout_modules():  # Fickle Teacher: dropout can still be switched on
        d.train(True)
    with torch.no_grad():
        assert not torch.equal(folded(x), logits)


def _armed(channels_last=False, batch=6, size=(9, 7)):
    """A WRN-10-1 with dropout 0.5 drawing its masks ahead, for `batch` images of `size`."""
    model = build_model(WRNSpec(10, 1, dropout=0.5), 0).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.draw_dropout_ahead(batch, size, torch.Generator().manual_seed(0), channels_last)
    return model


@pytest.mark.parametrize("channels_last", [False, True])
def test_masks_drawn_ahead_fit_every_dropout_layer_and_are_dropout(channels_last):
    model = _armed(channels_last)
    x = torch.rand(6, 3, 9, 7)  # odd sizes: the stride-2 convolutions round up
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    seen = []
    for layer in model.dropout_modules():
        layer.register_forward_hook(lambda m, inp, out: seen.append((inp[0], m.keep, out)))
    model.draw_dropout()
    with torch.no_grad():
        a = model(x)
        b = model(x)  # no new draw: the same masks
    assert torch.equal(a, b) and len(seen) == 2 * 3
    for inp, keep, out in seen:
        assert keep.shape == inp.shape and keep.stride() == inp.stride()
        torch.testing.assert_close(out, inp * keep * 2.0)
    assert 0.45 < model.dropout_keep.float().mean() < 0.55
    assert model.dropout_keep.numel() == sum(inp.numel() for inp, _, _ in seen[:3])
    model.draw_dropout()
    with torch.no_grad():
        assert not torch.equal(model(x), a)  # a fresh draw
        assert model(x[:4]).shape == (4, 10)  # a smaller last batch reads a prefix of the masks


def test_masks_drawn_ahead_replay_from_the_seed_and_disarm():
    outputs = []
    for _ in range(2):
        model = _armed()
        model.draw_dropout()
        model.draw_dropout()
        with torch.no_grad():
            outputs.append(model(torch.ones(6, 3, 9, 7)))
    assert torch.equal(*outputs)
    model.eval().draw_dropout()  # in eval mode nothing is drawn
    keep = model.dropout_keep.clone()
    model.train()
    model.stop_drawing_dropout_ahead()
    assert model.dropout_keep is None and all(layer.keep is None for layer in model.dropout_modules())
    assert "dropout_keep" not in model.state_dict()
    model.draw_dropout()  # unarmed: a no-op, each layer draws in its forward again
    assert model(torch.ones(6, 3, 9, 7)).shape == (6, 10) and keep.any()


def test_masks_drawn_ahead_let_torch_compile_trace_the_dropout_network_whole():
    import torch._dynamo

    x = torch.rand(6, 3, 9, 7)
    unarmed = wide_resnet(10, 1, dropout=0.5).train()
    for layer in unarmed.dropout_modules():
        layer.generator = torch.Generator().manual_seed(0)
    torch._dynamo.reset()
    assert torch._dynamo.explain(unarmed)(x).graph_break_count > 0  # a generator argument breaks the graph
    model = _armed()
    torch._dynamo.reset()
    assert torch._dynamo.explain(model)(x).graph_break_count == 0


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_dropout_network_reads_masks_drawn_ahead_at_every_call(backend):
    """The masks are an input of the compiled graph, read at every call, not a constant baked in."""
    import torch._dynamo

    x = torch.rand(6, 3, 9, 7)
    model = _armed()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, dynamic=False)
    for _ in range(2):
        model.draw_dropout()
        out = compiled(x)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        ref = model(x)
        ref.square().sum().backward()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        for g, p in zip(grads, model.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-4)
        model.zero_grad()
    torch._dynamo.reset()
