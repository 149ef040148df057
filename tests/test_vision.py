"""CIFAR-100 (on data the tests write in its pickle layout), WRN and SAD."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from harness.api import DataBundle, Step, TensorSplit
from harness.cli import main
from harness.errors import UsageError
from harness_distill import sad
from harness_distill.sad import SAD, Attention, sad_attention_loss, sad_attention_loss_per_layer, value_map
from harness_vision import cifar
from harness_vision.cifar import Cifar100, augment_batch, crop_flip, normalise_batch, transform_batch
from harness_vision.wrn import WideResNet, WRNFactory

from .conftest import write_cifar100_format

ROOT = Path(__file__).resolve().parents[1]


def dataset(root, **opts):
    return Cifar100(**Cifar100.resolve_params({"root": str(root), **opts}, "test"))


def test_loads_the_pickle_layout_into_uint8_splits(cifar_root):
    b = dataset(cifar_root, verify=False, val_per_class=1).load("classification")
    assert b.train["x"].dtype == torch.uint8 and b.train["x"].shape[1:] == (3, 32, 32)
    assert (len(b.train), len(b.val), len(b.test)) == (200, 100, 100)
    assert b.info["n_classes"] == 100 and b.info["class_names"][3] == "class3"
    # the validation images are held out of training: per class, the first one
    assert set(b.val["y"].tolist()) == set(range(100))
    assert "checksums NOT verified" in b.note
    sub = dataset(cifar_root, verify=False, val_per_class=0, train_per_class=2).load("classification")
    assert len(sub.train) == 200 and sub.val is sub.test
    assert "validation uses the test split" in sub.note and "a subset" in sub.note


def test_checksum_failure_names_the_file(cifar_root):
    with pytest.raises(UsageError, match=r"cifar-100-python/train: checksum mismatch \(md5 "):
        dataset(cifar_root).load("classification")


def test_not_a_pickle_is_a_clear_error(cifar_root):
    (cifar_root / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="test: not a CIFAR-100 pickle"):
        dataset(cifar_root, verify=False).load("classification")


def test_missing_data_says_where_and_how_to_fix(tmp_path):
    why = dataset(tmp_path / "nowhere").missing()
    assert str(tmp_path / "nowhere" / "cifar-100-python") in why
    assert f"harness datasets download cifar100 --root {tmp_path / 'nowhere'}" in why


def test_crop_flip_matches_a_per_image_reference():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    oy, ox = torch.tensor([0, 8, 4, 2, 7]), torch.tensor([8, 0, 4, 5, 1])
    flip = torch.tensor([False, True, True, False, True])
    got = crop_flip(x, oy, ox, flip)
    for i in range(5):
        padded = F.pad(x[i], (4, 4, 4, 4))
        ref = padded[:, oy[i] : oy[i] + 32, ox[i] : ox[i] + 32]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(got[i], ref)
    assert torch.equal(
        crop_flip(x, torch.full((5,), 4), torch.full((5,), 4), torch.zeros(5, dtype=torch.bool)), x
    )  # centre: identity


def test_augmentation_shapes_ranges_and_determinism():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert set(a.unique().tolist()) <= {0, 200}  # original pixels or zero padding
    assert (a == 0).any() and (a == 200).float().mean() > 0.7
    assert torch.equal(a, augment_batch(x, torch.Generator().manual_seed(1)))
    n = normalise_batch(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert n.dtype == torch.float32
    assert torch.allclose(n[0, :, 0, 0], -torch.tensor(cifar.MEAN) / torch.tensor(cifar.STD))


def test_wrn_parameter_counts_and_features():
    for depth, params, n_feats in ((40, 2_255_156, 18), (16, 703_284, 6)):
        m = WideResNet(depth, 2, 100)
        assert sum(p.numel() for p in m.parameters()) == params
        shapes = []
        hooks = [
            layer.register_forward_hook(lambda _m, _i, o, out=shapes: out.append(o.shape))
            for layer in m.feature_layers()
        ]
        m(torch.randn(2, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert len(shapes) == n_feats
        per = n_feats // 3
        assert shapes[:per] == [torch.Size([2, 32, 32, 32])] * per
        assert shapes[per : 2 * per] == [torch.Size([2, 64, 16, 16])] * per
        assert shapes[2 * per :] == [torch.Size([2, 128, 8, 8])] * per
    with pytest.raises(UsageError, match="depth must be 6n\\+4"):
        WRNFactory.resolve_params({"depth": 20}, "m")
    assert WRNFactory.presets["wrn-40-2"] == {"depth": 40, "widen": 2}


def test_sad_attention_rows_sum_to_one_and_gradients_reach_only_the_student():
    torch.manual_seed(0)
    t_feats = [torch.randn(4, 8, 8, 8), torch.randn(4, 16, 4, 4), torch.randn(4, 16, 4, 4)]
    s_feats = [torch.randn(4, 4, 8, 8, requires_grad=True), torch.randn(4, 8, 4, 4, requires_grad=True)]
    att_mod = Attention([8, 16, 16], [4, 8], d=16)
    att = att_mod(t_feats, s_feats)
    assert att.shape == (4, 3, 2)
    assert torch.allclose(att.sum(2), torch.ones(4, 3), atol=1e-6)
    teacher_params = [torch.randn(8, requires_grad=True)]
    t_used = [f * teacher_params[0].detach().mean() for f in t_feats]  # a detached teacher
    loss = sad_attention_loss(att, t_used, s_feats)
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s_feats)
    assert att_mod.p_t.grad is not None and att_mod.query[0][0].weight.grad is not None
    assert teacher_params[0].grad is None


def sgd_steps(model, x, y, steps=3):
    """Losses of a few SGD steps (momentum, as the grids train) on one batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_channels_last_trains_as_the_default_layout():
    # the factory's channels_last model on the transform's channels_last batches against
    # the plain module in the default layout: same losses and weights within float rounding
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    data = DataBundle("classification", *[TensorSplit({"x": images, "y": y})] * 3, info={"n_classes": 10})
    torch.manual_seed(0)
    plain = WideResNet(10, 1, 10)
    torch.manual_seed(0)
    fast = WRNFactory(**WRNFactory.resolve_params({"depth": 10, "widen": 1}, "m")).build(data)
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x_cl = transform_batch(images, False, None)
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    x = normalise_batch(images)
    assert torch.equal(x_cl, x) and x.is_contiguous()
    assert sgd_steps(fast, x_cl, y) == pytest.approx(sgd_steps(plain, x, y), rel=1e-5)
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_sad_pools_channels_last_maps_to_the_same_values_with_channels_last_gradients():
    # a student's channels_last feature must get its SAD gradient in channels_last: a
    # default-layout one beside its convolutions' makes the block's backward mix layouts
    torch.manual_seed(0)
    f0 = torch.randn(4, 8, 6, 6)
    for f in (f0, f0.contiguous(memory_format=torch.channels_last)):
        f = f.clone().requires_grad_()
        # bit for bit what the mean over the axes gives on the same map
        assert torch.equal(sad.gap(f), f.detach().mean(dim=(2, 3)))
        assert torch.equal(sad.value_map(f), f.detach().pow(2).mean(1))
        loss = (sad.gap(f) * torch.arange(8.0)).sum() + sad.value_map(f).square().sum()
        (grad,) = torch.autograd.grad(loss, f)
        fmt = torch.channels_last if f.stride(1) == 1 else torch.contiguous_format
        assert grad.is_contiguous(memory_format=fmt)
        f_ref = f0.clone().requires_grad_()
        ref = (f_ref.mean(dim=(2, 3)) * torch.arange(8.0)).sum() + f_ref.pow(2).mean(1).square().sum()
        torch.testing.assert_close(grad, torch.autograd.grad(ref, f_ref)[0])


def test_batched_sad_loss_matches_the_per_layer_one():
    torch.manual_seed(0)
    tf = [torch.randn(4, c, s, s) for c, s in [(8, 16)] * 3 + [(16, 8)] * 2 + [(32, 4)] * 2]
    sf = [torch.randn(4, c, s, s, requires_grad=True) for c, s in ((8, 16), (16, 8), (32, 4))]
    att_mod = Attention([f.shape[1] for f in tf], [f.shape[1] for f in sf], d=16)
    att = att_mod(tf, sf)
    inputs = sf + list(att_mod.parameters())
    fast, ref = sad_attention_loss(att, tf, sf), sad_attention_loss_per_layer(att, tf, sf)
    assert fast.item() == pytest.approx(ref.item(), rel=1e-5)
    g_fast = torch.autograd.grad(fast, inputs, retain_graph=True)
    g_ref = torch.autograd.grad(ref, inputs)
    for a, b in zip(g_fast, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # other layouts (the movie dcnn's [B, C, L], hidden vectors) keep the per-layer path:
    # bitwise the published movie results
    seq = [torch.randn(4, 6, 10), torch.randn(4, 12)]
    att = torch.softmax(torch.randn(4, 2, 2), 2)
    assert torch.equal(
        sad_attention_loss(att, seq, seq[::-1]), sad_attention_loss_per_layer(att, seq, seq[::-1])
    )


def test_sad_distance_by_hand():
    # one teacher layer, one student layer; attention is then 1
    ft = torch.zeros(1, 1, 2, 2)
    ft[0, 0, 0, 0] = 1.0  # value map: one-hot at (0, 0)
    fs = torch.zeros(1, 1, 2, 2)
    fs[0, 0, 1, 1] = 2.0  # value map: one-hot at (1, 1) after normalising
    att = torch.ones(1, 1, 1)
    # (v_s - v_t)^2 = 1 at two positions, 0 at two: mean over 4 positions = 0.5
    assert sad_attention_loss(att, [ft], [fs]).item() == pytest.approx(0.5)
    assert sad_attention_loss(att, [ft], [ft * 3]).item() == pytest.approx(0.0)
    # a student map of another size is pooled to the teacher's before comparing
    big = torch.zeros(1, 1, 4, 4)
    big[0, 0, :2, :2] = 1.0
    assert sad_attention_loss(att, [ft], [big]).item() == pytest.approx(0.0, abs=1e-7)
    assert value_map(torch.tensor([[1.0, -2.0]])).tolist() == [[1.0, 4.0]]


def test_sad_loss_combines_task_kd_and_attention():
    torch.manual_seed(0)
    teacher, student = WideResNet(16, 1, 10), WideResNet(10, 1, 10)
    x = torch.randn(4, 3, 32, 32)
    data = DataBundle(
        "classification",
        TensorSplit({"x": x, "y": torch.zeros(4)}),
        TensorSplit({"x": x, "y": torch.zeros(4)}),
        TensorSplit({"x": x, "y": torch.zeros(4)}),
        info={"n_classes": 10},
    )
    sad = SAD(**SAD.resolve_params({"beta": 0.0, "alpha": 0.0}, "sad"))
    params = sad.setup(teacher, student, data, {"x": x})
    assert sad.attention.n == 6 and sad.attention.m == 3  # WRN-16-1: 6 blocks, WRN-10-1: 3
    assert params and all(p.requires_grad for p in params)
    tf = [torch.randn(4, c, s, s) for c, s in [(16, 32)] * 2 + [(32, 16)] * 2 + [(64, 8)] * 2]
    sf = [torch.randn(4, c, s, s) for c, s in ((16, 32), (32, 16), (64, 8))]
    out, t_out = torch.randn(4, 10), torch.randn(4, 10)
    step = Step(
        batch={},
        task="classification",
        student_out=out,
        task_loss=torch.tensor(1.5),
        teacher_out=t_out,
        student_features=sf,
        teacher_features=tf,
    )
    assert sad.loss(step).item() == pytest.approx(1.5)  # alpha = beta = 0: the task loss
    sad.hparams.update(beta=2.0)
    l_att = sad_attention_loss(sad.attention(tf, sf), tf, sf)
    assert sad.loss(step).item() == pytest.approx(1.5 + 2.0 * l_att.item(), rel=1e-5)


@pytest.mark.slow
def test_sad_runs_on_the_movie_dcnn_too(write_grid, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(distillers="[sad]")
    assert main(["run", "--grid", str(grid)]) == 0
    assert "1 ok, 0 failed" in capsys.readouterr().out


def test_download_without_network_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CIFAR100_URL", "file:///nonexistent/cifar-100-python.tar.gz")
    target = tmp_path / "data" / "cifar"
    assert main(["datasets", "download", "cifar100", "--root", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: cannot download CIFAR-100")
    assert "nothing was written" in err[0]
    assert not (tmp_path / "data").exists()


def make_archive(src_root: Path, dest: Path) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src_root / "cifar-100-python", arcname="cifar-100-python")
    dest.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


def test_download_checks_the_archive_then_unpacks_into_place(cifar_root, tmp_path, monkeypatch, capsys):
    archive = tmp_path / "cifar-100-python.tar.gz"
    digest = make_archive(cifar_root, archive)
    monkeypatch.setenv("HARNESS_CIFAR100_URL", archive.as_uri())
    target = tmp_path / "fresh"
    # the release's checksum does not match this archive: refused, nothing left behind
    assert main(["datasets", "download", "cifar100", "--root", str(target)]) == 2
    assert "has md5" in capsys.readouterr().err and not target.exists()
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", digest)
    assert main(["datasets", "download", "cifar100", "--root", str(target)]) == 0
    assert sorted(p.name for p in (target / "cifar-100-python").iterdir()) == ["meta", "test", "train"]
    assert [p.name for p in target.iterdir()] == ["cifar-100-python"]  # no temporary left
    capsys.readouterr()
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert main(["datasets"]) == 0
    listed = capsys.readouterr().out
    assert "cifar100" in listed and "imdb-movies" in listed


def cpu_grid_on(data_root: Path, tmp_path: Path) -> Path:
    grid = yaml.safe_load((ROOT / "grids" / "cifar100-cpu.yaml").read_text())
    ds = grid["datasets"][0]
    ds.update(root=str(data_root), verify=False, train_per_class=2, val_per_class=1, test_per_class=1)
    grid["budget"].update(epochs=1, teacher_epochs=1)
    grid["seeds"] = [0]
    path = tmp_path / "cifar100-cpu.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.slow
def test_cpu_grid_end_to_end_on_test_written_data(tmp_path, monkeypatch, capsys):
    data_root = write_cifar100_format(tmp_path / "cifar", train_per_class=3, test_per_class=1)
    monkeypatch.chdir(tmp_path)
    grid = cpu_grid_on(data_root, tmp_path)
    assert main(["run", "--grid", str(grid)]) == 0
    assert "3 ok, 0 failed" in capsys.readouterr().out
    md = next((tmp_path / "runs/cifar100-cpu/leaderboards").glob("cifar100*classification.md"))
    text = md.read_text()
    wide = text.split("## Every column")[1].splitlines()  # the whole table
    header = next(line for line in wide if line.startswith("| Method"))
    assert "Top-1 err %" in header and "Params" in header and "Train J" in header
    for method in ("| WRN ", "| KD(", "| SAD("):
        wide = text.split("## Every column")[1].splitlines()  # the whole table
        row = next(line for line in wide if line.startswith(method))
        assert "703,284" in row and "wrn:wrn-16-2" in row
    assert "checksums NOT verified" in text


def test_grid_with_absent_cifar_runs_its_other_datasets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(f"""
datasets:
  - {{name: cifar100, root: {tmp_path / "no-cifar"}}}
  - {{name: imdb-movies, features: social}}
teacher: [{{model: wrn, preset: wrn-16-2}}, {{model: dcnn, channels: [4], hidden: 4}}]
student: [{{model: wrn, depth: 10, widen: 1}}, {{model: dcnn, channels: [2], hidden: 4}}]
distillers: [none]
budget: {{epochs: 1, batch_size: 512}}
energy: {{inference_min_seconds: 0.0}}
""")
    assert main(["run", "--grid", "g.yaml"]) == 0
    out = capsys.readouterr().out
    assert "1 ok, 0 failed" in out
    db = sqlite3.connect(tmp_path / "runs/g/results.db")
    reasons = [r for (r,) in db.execute("select reason from cells where status='skipped'")]
    fix = f"run `harness datasets download cifar100 --root {tmp_path / 'no-cifar'}`"
    assert sum(fix in r for r in reasons) == 4  # every CIFAR cell, with the fix
    assert any("does not support the rating task" in r for r in reasons)


def _can_compile() -> str | None:
    """Why torch.compile (inductor) cannot run here, or None when it can."""
    try:
        torch.compile(lambda t: t.relu() + 1)(torch.ones(2))
    except Exception as e:  # no C++ compiler, an unsupported platform, ...
        return f"torch.compile (inductor) cannot compile on this machine: {type(e).__name__}: {e}"[:300]
    return None


@pytest.mark.slow
def _tiny_cifar_and_teacher() -> tuple[DataBundle, torch.nn.Module]:
    """32 random CIFAR-format images of 5 classes (train = val = test) and a WRN-10-1
    teacher in eval mode, the same at every call."""
    g = torch.Generator().manual_seed(0)
    split = TensorSplit(
        {
            "x": torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g),
            "y": torch.arange(32) % 5,
        }
    )
    data = DataBundle("classification", split, split, split, info={"n_classes": 5}, transform=cifar.transform)
    torch.manual_seed(0)
    return data, WRNFactory(depth=10, widen=1, dropout=0.0).build(data).eval()


def test_train_compile_trains_as_the_eager_step():
    # train.compile runs the distiller's loss (SAD: attention, value maps, KD) through
    # torch.compile: two epochs of two batches must give the eager path's losses and
    # weights within float rounding, with no graph break. (One batch shape: a second one
    # recompiles, which doubles the test's ~45 s of compile time on 2 cores.)
    why = _can_compile()
    if why:
        pytest.skip(why)
    from torch._dynamo.utils import counters

    from harness.runner import train_model
    from harness.tasks import get_task

    data, teacher = _tiny_cifar_and_teacher()
    runs = {}
    counters.clear()
    for compiled in (False, True):
        torch.manual_seed(1)
        student, hist = WRNFactory(depth=10, widen=1, dropout=0.0).build(data), []
        distiller = SAD(alpha=0.9, T=4.0, beta=200.0, d=16)
        extra = distiller.setup(teacher, student, data, data.prepare(data.train.head(8)))
        cfg = {"optimizer": "sgd", "lr": 0.01, "compile": compiled}
        gen = torch.Generator().manual_seed(0)
        train_model(
            student,
            data,
            get_task("classification"),
            cfg,
            3,
            16,
            gen,
            distiller,
            teacher,
            extra,
            history=hist,
        )
        runs[compiled] = (hist, student.state_dict())
    assert not counters["graph_break"], dict(counters["graph_break"])
    (h0, w0), (h1, w1) = runs[False], runs[True]
    for e0, e1 in zip(h0, h1, strict=True):
        assert e1["loss"] == pytest.approx(e0["loss"], rel=1e-4)
        assert e1["terms"] == pytest.approx(e0["terms"], rel=1e-4, abs=1e-6)
    for k in w0:
        # rounding differences of ~1e-7 in the loss's gradients grow through the steps
        # (beta = 200): ~7e-5 at most here; a term lost or changed moves them by far more
        torch.testing.assert_close(w1[k], w0[k], rtol=1e-3, atol=2e-4, msg=k)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_train_autocast_runs_the_step_in_low_precision_and_keeps_float32_weights(precision):
    # train.autocast: the step's convolutions, the student's and the KD teacher's, run in
    # bf16 or fp16 (a forward hook sees their outputs' dtype); the weights stay float32,
    # fp16's steps go through the gradient scaler, the losses follow the float32 run's
    # within low-precision rounding, and the trained model evaluates in float32.
    from unittest import mock

    from harness.runner import train_model
    from harness.tasks import get_task
    from harness_distill.kd import KnowledgeDistillation

    data, teacher = _tiny_cifar_and_teacher()
    runs = {}
    for setting in ("none", precision):
        torch.manual_seed(1)
        student, hist, seen = WRNFactory(depth=10, widen=1, dropout=0.0).build(data), [], set()
        hooks = [
            m.conv1.register_forward_hook(lambda _m, _i, o, seen=seen: seen.add(o.dtype))
            for m in (student, teacher)
        ]
        update = torch.amp.GradScaler.update
        scaler_updates = mock.patch.object(torch.amp.GradScaler, "update", autospec=True, side_effect=update)
        with scaler_updates as updates:
            train_model(
                student,
                data,
                get_task("classification"),
                {"optimizer": "sgd", "lr": 0.01, "autocast": setting},
                2,
                16,
                torch.Generator().manual_seed(0),
                KnowledgeDistillation(T=4.0, alpha=0.9),
                teacher,
                history=hist,
            )
        for h in hooks:
            h.remove()
        runs[setting] = (hist, seen, updates.call_count, student)
    (h32, seen32, n32, _), (h16, seen16, n16, student) = runs["none"], runs[precision]
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert seen32 == {torch.float32} and seen16 == {low}
    assert (n32, n16) == (0, 4 if precision == "fp16" else 0)  # (2 epochs of 2 steps)
    assert all(p.dtype == torch.float32 for p in student.parameters())
    for e32, e16 in zip(h32, h16, strict=True):
        assert e16["loss"] != e32["loss"]  # (the step did run in another precision)
        assert e16["terms"]["task"] == pytest.approx(e32["terms"]["task"], rel=0.01)
        # (KD's term is the KL between two untrained nets' near-uniform softmaxes, about
        # 0.04 here: bf16's 8-bit mantissa moves it by up to a third, the loss by < 10%)
        assert e16["loss"] == pytest.approx(e32["loss"], rel=0.1)
    with torch.no_grad():
        assert student.eval()(data.prepare(data.train.head(4))["x"]).dtype == torch.float32
