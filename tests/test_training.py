"""The training recipe on CPU: configs, masking, batching, the mix adjustment, loss going down,
resume equality, LoRA merge, and a real DeepSpeed ZeRO-2 launch."""

import json
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from qsit.mixture import adjust, draw_epoch, length_grouped_batches, padding_fraction, resolve_sizes
from qsit.recipe import TrainRecipe, epoch_end_steps, lr_schedule, run, validate
from qsit.tokenization import (
    IGNORE_INDEX,
    SCORING_FLIPS,
    Collator,
    drawn_flip,
    encode,
    estimate_length,
    image_size_hw,
    token_loss_sum,
)
from qsit.train_config import ConfigError, load_config
from qsit.train_data import load_sources
from tests.helpers import interrupt_after_first

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "qsit" / "configs" / "train").glob("*.yaml"))
TINY = next(p for p in CONFIGS if p.name == "tiny-cpu.yaml")


def overrides(corpus, out, *extra):
    return [f"output_dir={out}", "data.sources=[" + ", ".join(f"{{path: {corpus / k}}}" for k in ("d1", "d2", "d3"))
            + "]", *extra]


def stage_overrides(path, corpus, out):
    """Shipped configs point at the default corpus; tests point them at the small one."""
    if load_config_raw(path).get("stage") == "perception":
        return [f"output_dir={out}", f"perception.photos=[{corpus / 'photos' / 'train'}]"]
    return overrides(corpus, out)


def load_config_raw(path):
    import yaml

    return yaml.safe_load(Path(path).read_text())


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates(path, small_corpus, tmp_path):
    cfg = load_config(path, stage_overrides(path, small_corpus, tmp_path))
    report = validate(cfg)
    if cfg.stage == "perception":
        assert report["photos"] > cfg.perception.val_photos
        return
    assert report["train_pools"]["scoring"] > 0 and report["epoch_sizes"]["scoring"] > 0
    if cfg.deepspeed:
        assert report["deepspeed"].startswith("ZeRO stage")


def learning_rates(cfg, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    schedule = lr_schedule(optimizer, cfg.train, steps)
    rates = []
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        rates.append(schedule.get_last_lr()[0])
    return rates


def test_the_cosine_schedule_keeps_the_floor_it_is_given(small_corpus, tmp_path):
    plain = learning_rates(load_config(TINY, overrides(small_corpus, tmp_path, "train.lr=0.01")), 100)
    floored = learning_rates(load_config(TINY, overrides(small_corpus, tmp_path, "train.lr=0.01",
                                                         "train.min_lr_ratio=0.25")), 100)
    assert plain[-1] == pytest.approx(0.0, abs=1e-6) and floored[-1] == pytest.approx(0.0025, rel=1e-3)
    assert max(floored) == pytest.approx(0.01, rel=1e-3)
    peak = floored.index(max(floored))
    assert (np.diff(floored[peak:]) <= 0).all()  # falls to the floor, never below it
    assert min(floored[peak:]) == pytest.approx(0.0025, rel=1e-3)
    with pytest.raises(ConfigError, match=r"train.min_lr_ratio must be in \[0, 1\)"):
        load_config(TINY, overrides(small_corpus, tmp_path, "train.min_lr_ratio=1"))
    with pytest.raises(ConfigError, match="train.min_lr_ratio needs train.scheduler: cosine"):
        load_config(TINY, overrides(small_corpus, tmp_path, "train.min_lr_ratio=0.2", "train.scheduler=linear"))


def test_unknown_keys_and_bad_overrides_are_errors(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="unknown key train.epoch. Did you mean epochs"):
        load_config(TINY, overrides(small_corpus, tmp_path, "train.epoch=2"))
    with pytest.raises(ConfigError, match="unknown key train.learning_rate. Known: .*lr"):
        load_config(TINY, overrides(small_corpus, tmp_path, "train.learning_rate=0.1"))
    with pytest.raises(ConfigError, match="train.epochs must be int"):
        load_config(TINY, overrides(small_corpus, tmp_path, "train.epochs=three"))
    with pytest.raises(ConfigError, match="exactly one of sizes or ratios"):
        load_config(TINY, overrides(small_corpus, tmp_path, "mix.sizes={scoring: 3}"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\noutput_dir: x\ndata: {sources: [{path: /nope}]}\nmix: {sizes: {scoring: 1}}\n")
    with pytest.raises(ConfigError, match="no records.jsonl"):
        validate(load_config(bad))


# ---------------------------------------------------------------- tokens


def test_a_source_can_keep_only_some_tasks(small_corpus, tmp_path):
    everything = load_sources(load_config(TINY, overrides(small_corpus, tmp_path)))
    wanted = ["data.sources=[{path: " + str(small_corpus / "d2") + ", tasks: [describe, mcq]}]"]
    some = load_sources(load_config(TINY, [f"output_dir={tmp_path}", *wanted]))
    d2 = [r for r, _ in everything if r.kind == "interpreting"]
    assert {r.meta["task"] for r, _ in some} == {"describe", "mcq"}
    assert len(some) == sum(r.meta.get("task") in ("describe", "mcq") for r in d2) < len(d2)
    misspelt = ["data.sources=[{path: " + str(small_corpus / "d2") + ", tasks: [descibe]}]"]
    with pytest.raises(ConfigError, match=r"no record has a task in \['descibe'\].*describe"):
        load_sources(load_config(TINY, [f"output_dir={tmp_path}", *misspelt]))


def test_a_source_can_keep_records_by_meta_and_draw_them_more_often(small_corpus, tmp_path):
    d1 = str(small_corpus / "d1")
    plain = [r for r, _ in load_sources(load_config(TINY, [f"output_dir={tmp_path}", f"data.sources=[{{path: {d1}}}]"]))]
    pristine = [r for r in plain if r.meta["mos"] == 100.0]
    assert 0 < len(pristine) < len(plain)
    cfg = load_config(TINY, [f"output_dir={tmp_path}",
                             f"data.sources=[{{path: {d1}}}, {{path: {d1}, where: {{mos: 100.0}}, repeat: 3}}]"])
    drawn = Counter(r.id for r, _ in load_sources(cfg))
    for r in plain:  # a pristine training record 1 + 3 times, a validation one 1 + 1, the rest once
        extra = (3 if r.split == "train" else 1) if r.meta["mos"] == 100.0 else 0
        assert drawn[r.id] == 1 + extra
    assert any(r.split == "val" for r in pristine) and any(r.split == "train" for r in pristine)
    nothing = [f"output_dir={tmp_path}", f"data.sources=[{{path: {d1}, where: {{mos: 101}}}}]"]
    with pytest.raises(ConfigError, match=r"no record's meta matches where \{'mos': 101\}"):
        load_sources(load_config(TINY, nothing))
    with pytest.raises(ConfigError, match=r"data.sources\[0\].repeat must be at least 1"):
        load_config(TINY, [f"output_dir={tmp_path}", f"data.sources=[{{path: {d1}, repeat: 0}}]"])


def test_labels_cover_exactly_the_assistant_tokens(assessor, small_corpus, tmp_path):
    cfg = load_config(TINY, overrides(small_corpus, tmp_path))
    record, paths = next((r, p) for r, p in load_sources(cfg) if r.meta.get("task") == "conversation")
    proc = assessor.processor
    ex = encode(proc, record, paths)
    tok = proc.tokenizer
    # Rebuild the expected mask turn by turn: everything from the template is masked,
    # each assistant text plus its end-of-turn token is learned.
    expected = []
    for m in record.messages:
        if m["role"] == "assistant":
            ids = tok(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
            expected.append(ids)
    learned, run_ = [], []
    for i, lab in zip(ex.input_ids, ex.labels, strict=True):
        if lab == IGNORE_INDEX:
            if run_:
                learned.append(run_)
                run_ = []
        else:
            assert lab == i
            run_.append(i)
    if run_:
        learned.append(run_)
    assert learned == expected
    n_image = ex.input_ids.count(proc.image_token_id)
    assert n_image > 0 and all(ex.labels[k] == IGNORE_INDEX for k, t in enumerate(ex.input_ids)
                               if t == proc.image_token_id)
    assert len(ex) == estimate_length(proc, record, [image_size_hw(p) for p in paths])


def test_a_flipped_view_encodes_the_flipped_image_and_nothing_else(assessor, small_corpus, tmp_path):
    from PIL import Image

    cfg = load_config(TINY, overrides(small_corpus, tmp_path))
    record, paths = next((r, p) for r, p in load_sources(cfg) if r.kind == "scoring" and r.split == "train")
    proc = assessor.processor
    upright = encode(proc, record, paths)
    for view in SCORING_FLIPS[1:]:
        saved = tmp_path / f"{view.name}.png"
        Image.open(paths[0]).convert("RGB").transpose(view).save(saved)
        flipped, from_file = encode(proc, record, paths, transpose=view), encode(proc, record, [saved])
        assert flipped.input_ids == from_file.input_ids == upright.input_ids and flipped.labels == upright.labels
        assert torch.equal(flipped.pixel_values, from_file.pixel_values)
        assert not torch.equal(flipped.pixel_values, upright.pixel_values)
    draws = [drawn_flip(0, epoch, b, i) for epoch in range(2) for b in range(20) for i in range(4)]
    assert draws == [drawn_flip(0, epoch, b, i) for epoch in range(2) for b in range(20) for i in range(4)]
    assert set(draws) == set(SCORING_FLIPS) and draws != [drawn_flip(1, e, b, i) for e in range(2)
                                                         for b in range(20) for i in range(4)]


def test_collator_pads_dynamically_and_grouping_cuts_padding(assessor, small_corpus, tmp_path):
    cfg = load_config(TINY, overrides(small_corpus, tmp_path))
    pairs = [(r, p) for r, p in load_sources(cfg) if r.split == "train"][:6]
    exs = [encode(assessor.processor, r, p) for r, p in pairs]
    batch = Collator(assessor.processor.tokenizer.pad_token_id)(exs)
    assert batch["input_ids"].shape == (6, max(len(e) for e in exs))
    assert batch["batch_num_images"].tolist() == [1] * 6 and batch["pixel_values"].shape[0] == 6
    loss = assessor.model(**batch).loss
    assert torch.isfinite(loss)
    lengths = list(np.random.default_rng(0).integers(20, 400, size=400))
    grouped = length_grouped_batches(lengths, 8, seed=0)
    plain = [list(range(i, min(i + 8, 400))) for i in range(0, 400, 8)]
    assert sorted(i for b in grouped for i in b) == list(range(400))
    assert padding_fraction(lengths, grouped) < padding_fraction(lengths, plain) < padding_fraction(
        lengths, plain, pad_to=4096)


def test_soft_level_labels_sit_on_the_level_word_and_one_hot_ones_give_the_plain_loss(assessor, small_corpus,
                                                                                      tmp_path):
    from qsit.assessor import resolve_level_token_ids
    from qsit.levels import LEVELS, soft_level_target
    from qsit.recipe import default_scoring_prompt

    proc = assessor.processor
    level_ids = resolve_level_token_ids(proc.tokenizer, default_scoring_prompt("qsit"))
    cfg = load_config(TINY, overrides(small_corpus, tmp_path))
    pairs = [(r, p) for r, p in load_sources(cfg) if r.split == "train"]
    scoring = [(r, p) for r, p in pairs if r.kind == "scoring"][:3]
    other = next((r, p) for r, p in pairs if r.kind == "interpreting")
    exs = [encode(proc, r, p, level_ids) for r, p in [*scoring, other]]
    low, high = json.loads((small_corpus / "d1" / "manifest.json").read_text())["level_range"]
    for (record, _), ex in zip(scoring, exs, strict=False):
        position, target = ex.soft_levels
        assert record.meta["level_range"] == [low, high]  # from the D1 build's manifest
        assert ex.input_ids[position] == level_ids[LEVELS.index(record.meta["level"])]
        assert target == pytest.approx(soft_level_target(record.meta["mos"], low, high).tolist())
    assert exs[-1].soft_levels is None
    batch = Collator(proc.tokenizer.pad_token_id)(exs)
    assert batch["soft_index"].tolist() == [[i, ex.soft_levels[0]] for i, ex in enumerate(exs[:3])]
    labels = batch.pop("labels")
    soft = (batch.pop("soft_index"), batch.pop("soft_targets"))
    with torch.no_grad():
        logits = assessor.model(**batch).logits
        plain_sum, plain_n = token_loss_sum(logits, labels)
        one_hot = torch.nn.functional.one_hot(torch.tensor([LEVELS.index(r.meta["level"]) for r, _ in scoring]), 5)
        same_sum, same_n = token_loss_sum(logits, labels, level_ids, soft[0], one_hot.float())
        soft_sum, soft_n = token_loss_sum(logits, labels, level_ids, *soft)
        hf = assessor.model(**batch, labels=labels).loss
    assert plain_n == same_n == soft_n and float(plain_sum / plain_n) == pytest.approx(float(hf), rel=1e-5)
    assert float(same_sum) == pytest.approx(float(plain_sum), rel=1e-5)
    # the soft loss swaps each level word's −log p(word) for −Σ q·log p(level), by hand:
    rows, positions = soft[0][:, 0], soft[0][:, 1]
    logp = torch.log_softmax(logits[rows, positions - 1], -1)[:, level_ids]
    swap = (-(soft[1] * logp).sum(1) + (one_hot * logp).sum(1)).sum()
    assert (soft[1].max(1).values < 1).any()
    assert float(soft_sum - plain_sum) == pytest.approx(float(swap), abs=1e-3) and abs(float(swap)) > 1e-3


def test_soft_level_labels_need_the_score_range(assessor, small_corpus, tmp_path):
    import dataclasses

    from qsit.assessor import resolve_level_token_ids
    from qsit.recipe import default_scoring_prompt

    level_ids = resolve_level_token_ids(assessor.processor.tokenizer, default_scoring_prompt("qsit"))
    cfg = load_config(TINY, overrides(small_corpus, tmp_path))
    record, paths = next((r, p) for r, p in load_sources(cfg) if r.kind == "scoring")
    bare = dataclasses.replace(record, meta={k: v for k, v in record.meta.items() if k != "level_range"})
    with pytest.raises(ValueError, match="level_range"):
        encode(assessor.processor, bare, paths, level_ids)
    with pytest.raises(ConfigError, match="score_labels must be one of level, soft"):
        load_config(TINY, overrides(small_corpus, tmp_path, "train.score_labels=gaussian"))


# ---------------------------------------------------------------- the mix


def test_draw_is_without_replacement_until_the_pool_runs_out():
    d = draw_epoch({"scoring": 10, "interpreting": 4}, {"scoring": 6, "interpreting": 9}, seed=0, epoch=0)
    assert len(set(d.indices["scoring"])) == 6 and d.resampled["scoring"] == 0
    assert len(d.indices["interpreting"]) == 9 and set(d.indices["interpreting"]) == set(range(4))
    assert d.resampled["interpreting"] == 5
    assert draw_epoch({"scoring": 10}, {"scoring": 6}, 0, 1).indices != draw_epoch({"scoring": 10}, {"scoring": 6},
                                                                                  0, 0).indices


def test_ratios_scale_to_the_base_pool():
    assert resolve_sizes({"scoring": 100, "interpreting": 900, "general": 50},
                         ratios={"scoring": 1, "interpreting": 2.5, "general": 1.04}) == {
        "scoring": 100, "interpreting": 250, "general": 104}


def test_adjustment_moves_sizes_the_right_way_on_scripted_losses():
    sizes = {"scoring": 100, "interpreting": 250, "general": 100}
    # λ = 1/4.66: L_S/L_I below it → more interpreting data; above it → more scoring data.
    lam = 1 / 4.66
    down = adjust(sizes, 0.1, 1.0, lam, step=0.1, tolerance=0.05)
    assert down.action == "grow interpreting" and down.sizes == {"scoring": 100, "interpreting": 275, "general": 110}
    up = adjust(sizes, 0.5, 1.0, lam, step=0.1, tolerance=0.05)
    assert up.action == "grow scoring" and up.sizes["scoring"] == 110 and up.sizes["interpreting"] == 250
    assert adjust(sizes, lam * 1.02, 1.0, lam, 0.1, 0.05).action == "keep"
    assert adjust(sizes, 0.1, 1.0, None, 0.1, 0.05).action == "fixed"
    # A sequence: ratios below, below, above λ.
    s = dict(sizes)
    for ls, li in ((0.1, 1.0), (0.15, 1.0), (0.4, 1.0)):
        s = adjust(s, ls, li, lam, 0.1, 0.05).sizes
    assert s == {"scoring": 110, "interpreting": 302, "general": 121}


# ---------------------------------------------------------------- training runs


def test_validation_sits_at_the_step_its_epoch_ended():
    assert epoch_end_steps([{"step": 40}, {"step": 70}], 70) == [40, 70]  # epochs of unequal length
    assert epoch_end_steps([{}, {}], 100) == [50, 100]  # a run saved before steps were recorded


def tiny_cfg(corpus, out, *extra):
    return load_config(TINY, overrides(corpus, out, "mix.ratios=null", "mix.sizes={scoring: 24, interpreting: 24}",
                                       "train.batch_size=4", "train.log_every=1", *extra))


def test_a_few_dozen_steps_lower_the_loss(small_corpus, tmp_path):
    cfg = tiny_cfg(small_corpus, tmp_path / "run", "train.epochs=6", "mix.sizes={scoring: 16, interpreting: 8}",
                   "train.lr=3e-3")
    result = run(cfg, progress=False)
    final = result.final
    assert [e["val_loss"] for e in result.epochs] == [json.loads(x)["val_loss"] for x in
                                                      (tmp_path / "run" / "mix_log.jsonl").read_text().splitlines()]
    assert result.loss_ratio == pytest.approx(result.val_loss["scoring"] / result.val_loss["interpreting"])
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if e["event"] == "train"]
    assert len(losses) == 36
    assert np.mean(losses[-6:]) < 0.6 * np.mean(losses[:6])
    val = [e["val_loss"] for e in log if e["event"] == "adjust"]
    assert val[-1]["scoring"] < val[0]["scoring"]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 5000
    assert [e["step"] for e in result.epochs] == [6, 12, 18, 24, 30, 36]  # where the plot puts validation
    assert len((tmp_path / "run" / "mix_log.jsonl").read_text().splitlines()) == 6
    from qsit.assessor import Assessor

    a = Assessor.from_pretrained(final)
    r = a.score([small_corpus / "images" / "test" / "dahlia_c0" / "pristine.png"])[0]
    assert sum(r.probabilities.values()) == pytest.approx(1.0)
    desc = json.loads((final / "qsit_model.json").read_text())
    assert desc["config"]["mix"]["sizes"] == {"scoring": 16, "interpreting": 8} and len(desc["run"]["mix_history"]) == 6
    assert (desc["preset"], desc["kinds"], desc["tasks"]) == ("qsit", ["interpreting", "scoring"], ["quality", "aesthetics"])
    assert a.preset.name == "qsit" and a.info == desc and a.notes == ()


def weights(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(Path(folder).glob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("flips, grey", [(False, 0.0), (True, 0.0), (False, 0.5)],
                         ids=["upright", "flipped-scoring-images", "grey-scoring-images"])
def test_resume_after_interrupt_matches_an_uninterrupted_run(small_corpus, tmp_path, monkeypatch, flips, grey):
    import qsit.tokenization

    views = Counter()
    real_encode = qsit.tokenization.encode

    def watched_encode(processor, record, paths, level_ids=None, transpose=None, grey=False):
        views[record.kind, transpose, grey] += 1
        return real_encode(processor, record, paths, level_ids, transpose, grey)

    monkeypatch.setattr(qsit.tokenization, "encode", watched_encode)
    options = (f"train.flip_scoring_images={str(flips).lower()}", f"train.grey_scoring_images={grey}")
    straight = run(tiny_cfg(small_corpus, tmp_path / "a", "train.epochs=2", "mix.reference_ratio=0.5", *options),
                   progress=False).final
    # training draws scoring images in all four views, and in grey, when asked; validation and other
    # kinds are always seen as they are
    assert {(flip, g) for kind, flip, g in views if kind != "scoring"} == {(None, False)}
    assert {flip for kind, flip, _ in views if kind == "scoring"} == (set(SCORING_FLIPS) if flips else {None})
    assert {g for kind, _, g in views if kind == "scoring"} == ({False, True} if grey else {False})
    cfg = tiny_cfg(small_corpus, tmp_path / "b", "train.epochs=2", "mix.reference_ratio=0.5",
                   "train.save_every_steps=9", *options)
    # Ctrl-C right after the step-9 checkpoint, mid-way through epoch 2 (6 batches per epoch).
    with pytest.raises(KeyboardInterrupt), interrupt_after_first(monkeypatch, TrainRecipe, "save_checkpoint",
                                                                 when=lambda tag: tag == "step-9"):
        run(cfg, progress=False)
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text() == "step-9"
    result = run(cfg, progress=False)
    resumed = result.final
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    hist_a = json.loads((straight / "qsit_model.json").read_text())["run"]["mix_history"]
    hist_b = json.loads((resumed / "qsit_model.json").read_text())["run"]["mix_history"]
    assert [h["sizes_after"] for h in hist_a] == [h["sizes_after"] for h in hist_b]
    # Run again once finished: the model is kept as it is (rewriting it would void every eval cache).
    stamp = [(p.name, p.stat().st_mtime_ns) for p in sorted(resumed.iterdir())]
    again = run(cfg, progress=False)
    assert again.final == resumed and again.global_steps == result.global_steps and again.epochs == result.epochs
    assert [(p.name, p.stat().st_mtime_ns) for p in sorted(resumed.iterdir())] == stamp


def test_the_tower_trains_at_its_own_rate(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="vision_lr needs train.freeze_vision: false"):
        tiny_cfg(small_corpus, tmp_path / "x", "train.freeze_vision=true", "train.vision_lr=1e-4")
    cfg = tiny_cfg(small_corpus, tmp_path / "run", "train.epochs=1", "train.lr=2e-3", "train.vision_lr=1e-4")
    recipe = TrainRecipe(cfg, progress=False)
    recipe.setup()
    rest, tower = recipe.optimizer.param_groups
    assert (rest["initial_lr"], tower["initial_lr"]) == (2e-3, 1e-4)
    tower_params = {id(p) for p in recipe.model.model.vision_tower.parameters()}
    assert {id(p) for p in tower["params"]} == tower_params
    assert not tower_params & {id(p) for p in rest["params"]} and rest["params"]
    before = [p.detach().clone() for p in recipe.model.model.vision_tower.parameters()]
    recipe.train()
    recipe.cleanup()
    assert any(not torch.equal(a, b) for a, b in zip(before, recipe.model.model.vision_tower.parameters(),
                                                       strict=True))


def test_a_run_with_soft_level_labels_learns_the_scores(small_corpus, tmp_path):
    cfg = tiny_cfg(small_corpus, tmp_path / "run", "train.epochs=4", "mix.sizes={scoring: 16, interpreting: 4}",
                   "train.lr=3e-3", "train.score_labels=soft")
    result = run(cfg, progress=False)
    val = [e["val_loss"]["scoring"] for e in result.epochs]
    assert all(np.isfinite(val)) and val[-1] < val[0]
    assert json.loads((result.final / "qsit_model.json").read_text())["config"]["train"]["score_labels"] == "soft"


def test_lora_train_merge_and_load(small_corpus, tmp_path):
    cfg = tiny_cfg(small_corpus, tmp_path / "lora", "train.epochs=1", "lora={r: 4, alpha: 8, dropout: 0.0}",
                   "train.lr=1e-2")
    recipe = TrainRecipe(cfg, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a normal run shows no library deprecation
        recipe.setup()
    trainable = [n for n, p in recipe.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    final = recipe.train().final
    recipe.cleanup()
    assert (tmp_path / "lora" / "checkpoints" / "epoch-1" / "model" / "adapter_config.json").is_file()
    merged = weights(final)
    assert not any("lora" in k for k in merged)
    base = weights(tmp_path / "lora" / "init-tiny")
    changed = [k for k in merged if "q_proj.weight" in k and not torch.equal(merged[k], base[k])]
    assert changed  # the adapters were merged into the base weights
    from qsit.assessor import Assessor

    assert Assessor.from_pretrained(final).score([small_corpus / "images" / "test" / "dahlia_c0" / "pristine.png"])


@pytest.mark.skipif(shutil.which("deepspeed") is None and not (Path(sys.executable).parent / "deepspeed").exists(),
                    reason="deepspeed launcher not installed")
def test_one_epoch_through_the_deepspeed_launcher_with_zero2(small_corpus, tmp_path):
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    out = tmp_path / "ds"
    args = overrides(small_corpus, out, "train.epochs=1", "mix.ratios=null", "mix.sizes={scoring: 4, interpreting: 4}",
                     "train.batch_size=4", "deepspeed=zero2")
    proc = subprocess.run([launcher, "--num_gpus", "1", "--master_port", "29517", "--module", "qsit.cli", "train",
                           str(TINY), *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "checkpoints" / "epoch-1" / "ds").is_dir() and (out / "final" / "config.json").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(e["event"] == "adjust" for e in log)


@pytest.mark.skipif(shutil.which("deepspeed") is None and not (Path(sys.executable).parent / "deepspeed").exists(),
                    reason="deepspeed launcher not installed")
def test_zero3_through_the_launcher_saves_whole_weights(small_corpus, tmp_path):
    """ZeRO-3 keeps every parameter in pieces; the final checkpoint must hold them whole, equal to
    what DeepSpeed's own consolidation of the last checkpoint gives."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import LlavaOnevisionForConditionalGeneration

    launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    ds = json.loads((Path(__file__).parent.parent / "qsit" / "configs" / "deepspeed" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition even the tiny model's tensors
    (tmp_path / "zero3.json").write_text(json.dumps(ds))
    out = tmp_path / "z3"
    args = overrides(small_corpus, out, "train.epochs=1", "mix.ratios=null", "mix.sizes={scoring: 4, interpreting: 4}",
                     "train.batch_size=4", f"deepspeed={tmp_path / 'zero3.json'}")
    proc = subprocess.run([launcher, "--num_gpus", "1", "--master_port", "29519", "--module", "qsit.cli", "train",
                           str(TINY), *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = LlavaOnevisionForConditionalGeneration.from_pretrained(out / "final").state_dict()
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints" / "epoch-1"), tag="ds")
    shared = [k for k in consolidated if k in saved]
    assert len(shared) >= len(consolidated) - 1  # all but a tied lm_head
    for k in shared:
        assert saved[k].shape == consolidated[k].shape and saved[k].numel() > 0, k
        torch.testing.assert_close(saved[k], consolidated[k].to(saved[k].dtype), atol=1e-6, rtol=1e-5)
    from qsit.assessor import Assessor

    assert Assessor.from_pretrained(out / "final").score([small_corpus / "images" / "test" / "dahlia_c0" / "pristine.png"])


def test_validate_from_the_command_line_with_overrides(capsys, small_corpus, tmp_path):
    from qsit.cli import main

    code = main(["train", "--validate", str(TINY), *overrides(small_corpus, tmp_path)])
    captured = capsys.readouterr()
    assert code == 0 and "is valid" in captured.err
    assert json.loads(captured.out)["epoch_sizes"]["scoring"] > 0
    assert main(["train", "--validate", str(TINY), *overrides(small_corpus, tmp_path), "train.epoch=1"]) == 2
    assert "Did you mean epochs" in capsys.readouterr().err


def test_two_processes_under_torchrun_share_the_epoch(small_corpus, tmp_path):
    out = tmp_path / "ddp"
    args = overrides(small_corpus, out, "train.epochs=1", "mix.ratios=null", "mix.sizes={scoring: 8, interpreting: 8}",
                     "train.batch_size=2", "train.save_every_steps=2", "train.log_every=1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29531", "-m", "qsit.cli", "train", str(TINY), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    # 16 records, batch 2, two processes: each runs 4 of the 8 batches.
    assert max(e["step"] for e in log if e["event"] == "train") == 4
    assert (out / "final" / "config.json").is_file()


def test_gradient_checkpointing_trains(small_corpus, tmp_path):
    cfg = tiny_cfg(small_corpus, tmp_path / "gc", "train.epochs=3", "train.gradient_checkpointing=true",
                   "mix.sizes={scoring: 8}", "train.lr=3e-3")
    recipe = TrainRecipe(cfg, progress=False)
    recipe.setup()
    m = recipe.model
    assert getattr(m, "is_activation_checkpointing", None) or m.is_gradient_checkpointing
    final = recipe.train().final
    recipe.cleanup()
    assert (final / "config.json").is_file()
    losses = [loss for _, loss in recipe.state["losses"]]
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < np.mean(losses[:2])


def test_config_paths_start_from_its_root_whatever_the_current_folder(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    shipped = load_config(repo / "qsit" / "configs" / "train" / "tiny-cpu.yaml")
    assert shipped.data.sources[0].path == str(repo / "data" / "synthetic" / "d1")
    assert shipped.output_dir == str(repo / "runs" / "qsit-tiny") and shipped.model == "tiny"
    (tmp_path / "exp").mkdir()
    text = (repo / "qsit" / "configs" / "train" / "tiny-cpu.yaml").read_text().replace("root: ../../..", "root: .")
    (tmp_path / "exp" / "mine.yaml").write_text(text)
    mine = load_config(tmp_path / "exp" / "mine.yaml", ["data.sources=[{path: corpus/d1}]"])
    assert mine.data.sources[0].path == str(tmp_path / "exp" / "corpus" / "d1")  # overrides too
    (tmp_path / "exp" / "plain.yaml").write_text(text.replace("root: .", ""))
    plain = load_config(tmp_path / "exp" / "plain.yaml")
    assert plain.data.sources[0].path == "data/synthetic/d1"  # no root: the current folder, as before
