"""The perception stage: tiles as the processor cuts them, distortions drawn on the fly, a tower
that learns, resume, and the hand-off to a chat stage of the same recipe."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qsit import perception
from qsit.images import grey
from qsit.perception import TileSampler, find_photos, split_photos
from qsit.recipe import run, validate
from qsit.train_config import ConfigError, load_config
from tests.helpers import interrupt_after_first

CONFIGS = Path(__file__).resolve().parent.parent / "qsit" / "configs" / "train"
STAGE1 = CONFIGS / "qsit-tiny-1-perception.yaml"
STAGE2 = CONFIGS / "qsit-tiny-2-scoring.yaml"
MINI = ("tiny_size={image_size: 32, patch_size: 8, vision_hidden: 32, vision_layers: 2, vision_heads: 2, "
        "text_hidden: 32, text_layers: 1, anyres_max: 4}")


def stage1(corpus, out, *extra):
    return load_config(STAGE1, [f"output_dir={out}", f"perception.photos=[{corpus / 'photos' / 'train'}]", MINI,
                                f"tiny_vocab_from=[{corpus / 'd1'}, {corpus / 'd2'}]",
                                "perception.batch_size=8", "perception.val_photos=1", "perception.val_samples=16",
                                "perception.workers=0", *extra])


def test_tiles_are_native_pixels_with_known_labels(small_corpus):
    photos = find_photos([small_corpus / "photos" / "train"])
    assert photos and all(p.suffix == ".png" for p in photos)
    sampler = TileSampler(photos, 32, ["gaussian_noise", "defocus_blur"], [0.5] * 3, [0.5] * 3,
                          pristine_fraction=0.5)
    draws = [sampler.draw(np.random.default_rng([3, i])) for i in range(40)]
    assert all(d.pixels.shape == (3, 32, 32) and d.pixels.dtype == np.float32 for d in draws)
    assert all(d.pixels.min() >= -1.0 and d.pixels.max() <= 1.0 for d in draws)  # normalised like the processor
    pristine = [d for d in draws if d.distortion == 2]
    damaged = [d for d in draws if d.distortion < 2]
    assert pristine and damaged
    assert all(d.severity == 0 and d.mos == 100.0 for d in pristine)
    assert all(1 <= d.severity <= 5 and d.mos < 100.0 for d in damaged)
    # Same seed, same tile: a resumed run draws exactly what the interrupted one would have.
    again = sampler.draw(np.random.default_rng([3, 0]))
    np.testing.assert_array_equal(again.pixels, draws[0].pixels)


def test_pairs_share_window_and_distortion_lighter_first(small_corpus):
    photos = find_photos([small_corpus / "photos" / "train"])
    sampler = TileSampler(photos, 32, ["gaussian_noise", "defocus_blur"], [0.5] * 3, [0.5] * 3)
    pairs = [sampler.draw_pair(np.random.default_rng([4, i])) for i in range(30)]
    for light, heavy in pairs:
        assert light.severity < heavy.severity and 1 <= heavy.severity <= 5
        assert heavy.distortion < 2 and light.distortion == (2 if light.severity == 0 else heavy.distortion)
    with_pristine = [p for p in pairs if p[0].severity == 0]
    assert 0 < len(with_pristine) < len(pairs) and all(p[0].mos == 100.0 for p in with_pristine)
    # one window: a noisy tile differs from its pristine twin by noise, not by content
    noisy = [(a, b) for a, b in with_pristine if b.distortion == 0]
    assert noisy and all(abs(float((b.pixels - a.pixels).mean())) < 0.1 for a, b in noisy)
    assert sum(a.mos >= b.mos for a, b in pairs) >= 0.9 * len(pairs)


def test_image_sized_windows_damage_at_an_images_scale(small_corpus):
    photos = find_photos([small_corpus / "photos" / "train"])
    kw = dict(pristine_fraction=0.0)
    small = TileSampler(photos, 32, ["zoom_blur"], [0.5] * 3, [0.5] * 3, **kw)
    image = TileSampler(photos, 32, ["zoom_blur"], [0.5] * 3, [0.5] * 3, window_side=128, tiles_per_window=4, **kw)
    groups = [image.draw_group(np.random.default_rng([6, i])) for i in range(12)]
    for group in groups:
        assert len(group) == 4 and len({(t.distortion, t.severity) for t in group}) == 1
        assert all(t.pixels.shape == (3, 32, 32) for t in group)
    # tiles are cut anywhere in the image, not at one place
    assert sum(not np.array_equal(g[0].pixels, g[1].pixels) for g in groups) >= 10
    # a zoom's streaks grow with the image: a severe zoom costs an image's tiles more than a small window's
    severe = [s for g in groups for s in g if s.severity >= 4]
    small_severe = [t for t in (small.draw(np.random.default_rng([7, i])) for i in range(80)) if t.severity >= 4]
    assert np.mean([t.mos for t in severe]) < np.mean([t.mos for t in small_severe]) - 5
    batch = next(perception._batches(image, 8, seed=0, start_step=0, workers=0))
    assert batch[0].shape == (8, 3, 32, 32) and len(set(batch[2][:4].tolist())) == 1  # two windows of four


def test_ranking_loss_orders_each_pair_by_its_pseudo_mos():
    distortion, severity = torch.tensor([0, 0]), torch.tensor([1.0, 3.0])
    mos = torch.tensor([80.0, 40.0])

    def ranking(predicted):
        out = {"distortion": torch.zeros(2, 3), "severity": severity, "mos": torch.tensor(predicted)}
        return float(perception.losses(out, distortion, severity, mos, ranking_weight=1.0)["ranking"])

    assert ranking([70.0, 50.0]) == 0.0  # ordered, beyond the margin
    assert ranking([50.0, 70.0]) == pytest.approx(perception.RANK_MARGIN + 0.2, abs=1e-6)
    assert ranking([60.0, 59.0]) == pytest.approx(perception.RANK_MARGIN - 0.01, abs=1e-6)
    assert "ranking" not in perception.losses({"distortion": torch.zeros(2, 3), "severity": severity,
                                                "mos": mos}, distortion, severity, mos)


def test_a_severity_per_distortion_is_read_at_the_tiles_own():
    heads = perception.perception_heads(4, 3, severity_per_distortion=True)
    with torch.no_grad():
        out = perception.head_outputs(heads, torch.randn(2, 5, 4))
    assert out["severity"].shape == (2, 3)
    distortion = torch.tensor([2, 0])
    np.testing.assert_allclose(perception.severity_of(out, distortion).numpy(),
                               [float(out["severity"][0, 2]), float(out["severity"][1, 0])])
    shared = perception.head_outputs(perception.perception_heads(4, 3), torch.randn(2, 5, 4))
    assert perception.severity_of(shared, distortion) is shared["severity"]


def test_stage_trains_on_tiles_of_image_sized_windows(small_corpus, tmp_path):
    cfg = stage1(small_corpus, tmp_path / "p", "perception.steps=3", "perception.window_side=64", "perception.val_photos=0",
                 "perception.tiles_per_window=4")
    assert run(cfg, progress=False).global_steps == 3
    with pytest.raises(ConfigError, match="smaller than the tower's 32-px tile"):
        run(stage1(small_corpus, tmp_path / "q", "perception.steps=3", "perception.window_side=24"), progress=False)


def test_ranking_stage_trains_on_pairs(small_corpus, tmp_path):
    cfg = stage1(small_corpus, tmp_path / "p", "perception.steps=4", "perception.ranking_weight=1.0")
    result = run(cfg, progress=False)
    state = torch.load(tmp_path / "p" / "checkpoints" / "perception.pt", weights_only=False)["state"]
    assert result.global_steps == 4 and all("ranking" in parts for _, parts in state["losses"])
    with pytest.raises(ConfigError, match="even batch_size"):
        validate(stage1(small_corpus, tmp_path / "q", "perception.batch_size=7", "perception.ranking_weight=1.0"))


def _block_edge_excess(sampler: TileSampler, n: int = 24) -> float:
    """Mean jump across columns 8k (JPEG's block edges when they line up with the patches) over
    the mean jump across the other columns, for severe JPEG tiles."""
    jumps = np.zeros(sampler.tile - 1)
    for i in range(n):
        pixels = sampler.draw(np.random.default_rng([5, i])).pixels
        jumps += np.abs(np.diff(pixels, axis=2)).mean(axis=(0, 1))
    at_edges = np.arange(1, sampler.tile) % 8 == 0  # diff column j compares pixel columns j and j+1
    return float(jumps[7::8].mean() / jumps[~np.roll(at_edges, -1)].mean())


def test_rescaled_tiles_do_not_line_jpeg_blocks_up_with_the_patches(small_corpus):
    photos = find_photos([small_corpus / "photos" / "train"])
    kw = dict(pristine_fraction=0.0, scale_range=(1.0, 1.0))
    centred = TileSampler(photos, 32, ["jpeg"], [0.5] * 3, [0.5] * 3, **kw)
    rescaled = TileSampler(photos, 32, ["jpeg"], [0.5] * 3, [0.5] * 3, tile_rescale=(0.85, 1.25), **kw)
    assert _block_edge_excess(centred) > 1.5  # the block edges fall exactly between patches
    assert _block_edge_excess(rescaled) < 1.2  # as in an image the processor has resized
    pristine = TileSampler(photos, 32, ["jpeg"], [0.5] * 3, [0.5] * 3, pristine_fraction=1.0,
                           tile_rescale=(0.85, 1.25)).draw(np.random.default_rng(1))
    assert pristine.mos == 100.0 and pristine.pixels.shape == (3, 32, 32)


def test_a_held_out_photo_listed_twice_is_held_out_everywhere(small_corpus, tmp_path):
    # the shipped recipe lists each wallpaper twice: in the corpus's photos/train and in its own folder
    corpus_photos = find_photos([small_corpus / "photos" / "train"])
    copies = tmp_path / "wallpapers"
    copies.mkdir()
    for p in corpus_photos[:2]:
        (copies / f"copy-{p.name}").write_bytes(p.read_bytes())
    photos = find_photos([small_corpus / "photos" / "train", copies])
    copied = {p.read_bytes() for p in corpus_photos[:2]}
    held_copies = 0
    for seed in range(12):
        train, val = split_photos(photos, 1, seed)
        assert len(val) == 1 and val[0] not in train
        assert val[0].read_bytes() not in {p.read_bytes() for p in train}
        if val[0].read_bytes() in copied:
            held_copies += 1
            assert len(train) == len(photos) - 2  # the photo and its copy
        else:
            assert len(train) == len(photos) - 1
    assert held_copies  # some seed held out a photo that has a copy


def test_config_needs_photos_and_a_known_stage(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="perception.photos"):
        load_config(STAGE1, [f"output_dir={tmp_path}", "perception.photos=[]"])
    with pytest.raises(ConfigError, match="stage must be one of chat, perception"):
        load_config(STAGE1, [f"output_dir={tmp_path}", "stage=pretrain"])
    with pytest.raises(ConfigError, match="does not exist"):
        validate(load_config(STAGE1, [f"output_dir={tmp_path}", f"perception.photos=[{tmp_path / 'nope'}]"]))
    with pytest.raises(ConfigError, match="tile_rescale"):
        validate(load_config(STAGE1, [f"output_dir={tmp_path}", "perception.tile_rescale=[0.5, 1.2]"]))
    with pytest.raises(ConfigError, match="tiles_per_window"):
        validate(load_config(STAGE1, [f"output_dir={tmp_path}", "perception.window_side=224",
                                      "perception.tiles_per_window=5"]))
    with pytest.raises(ConfigError, match="needs window_side"):
        validate(load_config(STAGE1, [f"output_dir={tmp_path}", "perception.tiles_per_window=4"]))
    with pytest.raises(ConfigError, match="pristine_fraction"):
        validate(load_config(STAGE1, [f"output_dir={tmp_path}", "perception.pristine_fraction=1.0"]))
    with pytest.raises(ConfigError, match="pristine_fraction"):
        validate(load_config(STAGE1, [f"output_dir={tmp_path}", "perception.pristine_fraction=0.3",
                                      "perception.ranking_weight=1"]))


def test_the_share_of_undamaged_tiles_follows_the_config(small_corpus, tmp_path):
    photos = find_photos([small_corpus / "photos" / "train"])

    def pristine_share(*overrides):
        pc = load_config(STAGE1, [f"output_dir={tmp_path}", *overrides]).perception
        sampler = perception.tile_sampler(pc, photos, 32, ["gaussian_noise", "jpeg"], [0.5] * 3, [0.5] * 3, patch=8)
        return np.mean([sampler.draw(np.random.default_rng([5, i])).distortion == 2 for i in range(120)])

    assert 0.08 < pristine_share() < 0.27  # a sixth by default
    assert 0.6 < pristine_share("perception.pristine_fraction=0.75") < 0.9
    assert pristine_share("perception.pristine_fraction=0") == 0


def test_grey_windows_follow_the_config_and_keep_their_label(small_corpus, tmp_path):
    from data_builders.synthetic import similarity

    photos = find_photos([small_corpus / "photos" / "train"])

    def draws(*overrides):
        pc = load_config(STAGE1, [f"output_dir={tmp_path}", *overrides]).perception
        sampler = perception.tile_sampler(pc, photos, 32, ["fog", "contrast"], [0.5] * 3, [0.5] * 3, patch=8)
        return [sampler.draw(np.random.default_rng([6, i])) for i in range(60)]

    def is_grey(sample):
        return np.ptp(sample.pixels, axis=0).max() < 1e-6  # the same value in every channel

    colour, some, every = draws(), draws("perception.grey_fraction=0.3"), draws("perception.grey_fraction=1")
    assert all(map(is_grey, every))
    assert sum(map(is_grey, colour)) + 5 < sum(map(is_grey, some)) < sum(map(is_grey, colour)) + 35
    # Without the option nothing more is drawn: the tiles are those the stage always drew.
    for a, b in zip(colour, draws("perception.grey_fraction=0"), strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
    # The pseudo-MOS compares luminance, which grey keeps: a damaged image and its grey view share a label.
    rng = np.random.default_rng(0)
    ref = rng.random((48, 48, 3)) * 0.5 + np.linspace(0, 0.5, 48)[:, None, None]
    damaged = ref * [1.0, 0.6, 0.3]
    assert similarity(ref, grey(damaged)) == pytest.approx(similarity(ref, damaged), abs=1e-9)


@pytest.mark.slow
def test_perception_stage_trains_the_tower_resumes_and_hands_off(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt), interrupt_after_first(monkeypatch, perception, "save_state"):
        run(stage1(small_corpus, out, "perception.steps=40", "perception.save_every=20"), progress=False)
    saved = torch.load(out / "checkpoints" / "perception.pt", weights_only=False)
    assert saved["state"]["step"] == 20
    result = run(stage1(small_corpus, out, "perception.steps=40", "perception.save_every=20"), progress=False)
    final = result.final
    assert result.stage == "perception" and result.global_steps == 40
    assert set(result.perception) == {"distortion_accuracy", "severity_srcc", "mos_srcc"}
    state = torch.load(out / "checkpoints" / "perception.pt", weights_only=False)["state"]
    assert state["step"] == 40 and len(state["losses"]) == 40  # resumed, not restarted
    losses = [sum(v.values()) for _, v in state["losses"]]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert (final / "perception_heads.pt").is_file() and (out / "perception.png").is_file()
    assert json.loads((final / "qsit_model.json").read_text())["stage"] == "perception"
    stamp = [(p.name, p.stat().st_mtime_ns) for p in sorted(final.iterdir())]
    again = run(stage1(small_corpus, out, "perception.steps=40", "perception.save_every=20"), progress=False)
    assert again.final == final and again.global_steps == 40 and again.perception == result.perception
    assert [(p.name, p.stat().st_mtime_ns) for p in sorted(final.iterdir())] == stamp  # a finished stage is kept
    from transformers import AutoTokenizer

    # The tokenizer was fitted to the corpus's answers too: their words are whole tokens.
    tok = AutoTokenizer.from_pretrained(final)
    assert len(tok.tokenize(" suffers")) == 1 and len(tok.tokenize(" compression")) == 1

    from transformers import LlavaOnevisionForConditionalGeneration

    init = LlavaOnevisionForConditionalGeneration.from_pretrained(out / "init-tiny")
    trained = LlavaOnevisionForConditionalGeneration.from_pretrained(final)
    tower_changed = [not torch.equal(a, b) for a, b in zip(init.model.vision_tower.parameters(),
                                                            trained.model.vision_tower.parameters(), strict=True)]
    assert all(tower_changed)
    for a, b in zip(init.model.language_model.parameters(), trained.model.language_model.parameters(), strict=True):
        assert torch.equal(a, b)  # only the tower learns in this stage

    # Stage 2 starts from stage 1's checkpoint, tower frozen, and leaves the tower as it was.
    chat = load_config(STAGE2, [f"model={final}", f"output_dir={tmp_path / 's2'}",
                                f"data.sources=[{{path: {small_corpus / 'd1'}}}]", "train.epochs=1",
                                "train.batch_size=4"])
    final2 = run(chat, progress=False).final
    after = LlavaOnevisionForConditionalGeneration.from_pretrained(final2)
    for a, b in zip(trained.model.vision_tower.parameters(), after.model.vision_tower.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(trained.model.multi_modal_projector.parameters(),
                                                     after.model.multi_modal_projector.parameters(), strict=True))


def test_the_default_recipe_chains_its_stages_and_ships_the_last():
    stages = sorted(CONFIGS.glob("qsit-tiny-*.yaml"))
    assert [p.name.split("-")[2] for p in stages] == [str(i + 1) for i in range(len(stages))]
    assert len(stages) >= 3 and stages[0].name == STAGE1.name
    cfgs = [load_config(p) for p in stages]
    for before, after in zip(cfgs[:-1], cfgs[1:], strict=True):  # each stage starts from the one before
        assert Path(after.root) / after.model == Path(before.output_dir) / "final"
    script = (CONFIGS.parents[2] / "scripts" / "train_default_model.sh").read_text()
    trained = [line.split("/")[-1] for line in script.splitlines() if line.startswith("$QSIT train")]
    assert trained == [p.name for p in stages]
    last = Path(cfgs[-1].output_dir).relative_to(CONFIGS.parents[2]) / "final"
    assert f"export_default_model.py {last} " in script



def test_quality_map_shows_where_the_damage_is():
    from data_builders.synthetic import similarity, similarity_map

    rng = np.random.default_rng(0)
    clean = np.clip(np.cumsum(rng.normal(0, 0.02, (64, 64, 3)), axis=1) + 0.5, 0, 1)
    noisy = clean.copy()
    noisy[:, :32] = np.clip(noisy[:, :32] + rng.normal(0, 0.1, (64, 32, 3)), 0, 1)
    q = similarity_map(clean, noisy, 8)
    assert q.shape == (8, 8)
    assert q[:, :4].max() < 0.9 < q[:, 5:].min()  # the noisy left half, the untouched right
    assert abs(q.mean() - similarity(clean, noisy)) < 0.05
    np.testing.assert_allclose(similarity_map(clean, clean, 8), 1.0)


def test_stage_learns_a_quality_map_from_every_patch(small_corpus, tmp_path):
    cfg = stage1(small_corpus, tmp_path / "p", "perception.steps=3", "perception.local_mos_weight=1.0")
    assert run(cfg, progress=False).global_steps == 3
    saved = torch.load(tmp_path / "p" / "checkpoints" / "perception.pt", weights_only=False)
    assert all("local" in parts for _, parts in saved["state"]["losses"])
    assert "local_mos_srcc" in saved["state"]["val"][-1][1] and "local.weight" in saved["heads"]
    sampler = perception.tile_sampler(cfg.perception, find_photos(cfg.perception.photos), 32,
                                      ["gaussian_noise"], [0.5] * 3, [0.5] * 3, patch=8)
    tiles = [sampler.draw(np.random.default_rng([3, i])) for i in range(12)]
    assert all(t.local.shape == (16,) for t in tiles)
    assert all((t.local == 100).all() for t in tiles if t.severity == 0)
    assert all(t.local.mean() < 100 for t in tiles if t.severity >= 3)
    with pytest.raises(ConfigError, match="local_mos_weight"):
        validate(stage1(small_corpus, tmp_path / "q", "perception.local_mos_weight=-1"))


def test_the_stage_can_ship_its_weights_moving_average_and_resumes_it(small_corpus, tmp_path, monkeypatch):
    from transformers import LlavaOnevisionForConditionalGeneration as Model

    args = ("perception.steps=20", "perception.save_every=10", "perception.ema_decay=0.8")
    whole = run(stage1(small_corpus, tmp_path / "whole", *args), progress=False)
    with pytest.raises(KeyboardInterrupt), interrupt_after_first(monkeypatch, perception, "save_state"):
        run(stage1(small_corpus, tmp_path / "cut", *args), progress=False)
    resumed = run(stage1(small_corpus, tmp_path / "cut", *args), progress=False)

    def tower(folder):
        return Model.from_pretrained(folder).model.vision_tower.state_dict()

    average, last = tower(whole.final), tower(tmp_path / "whole" / "final-last")
    assert any(not torch.equal(average[k], last[k]) for k in average)  # the average is not the last step
    again = tower(resumed.final)
    for k in average:  # the average survives an interruption
        torch.testing.assert_close(again[k], average[k], atol=1e-5, rtol=1e-4)
    info = json.loads((whole.final / "qsit_model.json").read_text())["run"]
    assert "moving average" in info["weights"] and info["val"] == whole.perception
    assert "last step" in json.loads((tmp_path / "whole" / "final-last" / "qsit_model.json").read_text())["run"]["weights"]
    assert run(stage1(small_corpus, tmp_path / "whole", *args), progress=False).perception == whole.perception
    with pytest.raises(ConfigError, match="ema_decay"):
        validate(stage1(small_corpus, tmp_path / "bad", "perception.ema_decay=1.0"))
