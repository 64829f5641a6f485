"""configs/lazy/: the LazyConfig files equal their yacs configs (models, data, optimizer, schedule,
run settings), and train_net.py trains, resumes and evaluates from one on a generated dataset."""
import math
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import META_ARCH_REGISTRY
from detectron2.solver import build_lr_scheduler
from detectron2.utils.events import EventStorage
from omegaconf import DictConfig, ListConfig

from evad_d2 import get_evad_cfg
from evad_d2.data import register_ava
from evad_d2.data.clip_mapper import ClipDatasetMapper
from evad_d2.checkpoint.official_evad import evad_d2_to_official
from evad_d2.data.synthetic import GeneratorSettings, generate
from evad_d2.engine import build_optimizer, resolve_epoch_schedule
from evad_d2.engine.lazy import LazyConfigError, load_lazy_config, multistep_lr_multiplier
from evad_d2.engine.lazy_trainer import LazyEVADTrainer, lazy_setup, lazy_train_and_evaluate
from evad_d2.testing import REPO_ROOT as ROOT, train_until

PAIRS = {
    "quickstart": ("configs/lazy/EVAD_tiny_ava_like_cpu.py", "configs/quickstart/EVAD_tiny_ava_like_cpu.yaml"),
    "vit_b": ("configs/lazy/EVAD_ViT-B_K400_rho0.7_224.py", "configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml"),
}
LAZY_QUICKSTART = os.path.join(ROOT, PAIRS["quickstart"][0])


def load_pair(which):
    lazy, yacs = PAIRS[which]
    return load_lazy_config(os.path.join(ROOT, lazy)), get_evad_cfg(os.path.join(ROOT, yacs))


def plain(value):
    """Omegaconf containers as Python lists/dicts, tuples as lists (for comparing settings)."""
    if isinstance(value, (ListConfig, list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (DictConfig, dict)):
        return {k: plain(v) for k, v in value.items()}
    return value


def settings(obj):
    """Every plain attribute of an object (numbers, strings, and lists/dicts of them), by name."""
    out = {}
    for key, value in vars(obj).items():
        value = plain(value)
        flat = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        if key != "training" and all(v is None or isinstance(v, (bool, int, float, str)) for v in flat):
            out[key] = value
    return out


def module_settings(model):
    """{submodule name: (class name, its plain attributes)}: what a model was built with, beyond
    its tensors (keep rates, drop-path rates, thresholds, loss weights, pooler settings, ...)."""
    return {name: (type(m).__name__, settings(m)) for name, m in model.named_modules()}


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def yacs_model_on_meta(cfg):
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


@pytest.mark.parametrize("which", sorted(PAIRS))
def test_lazy_and_yacs_configs_build_the_same_model(which):
    lazy, cfg = load_pair(which)
    torch.manual_seed(0)
    with torch.device("meta"):  # ViT-B without allocating or initialising its 185M weights
        lazy_model = instantiate(lazy.model)
    yacs_model = yacs_model_on_meta(cfg)
    assert shapes(lazy_model) == shapes(yacs_model)
    assert len(shapes(lazy_model)) > 100
    expected = module_settings(yacs_model)
    assert module_settings(lazy_model) == expected
    # The comparison sees the settings that do not shape a tensor: a keep rate or drop-path rate
    # that differs is found.
    lazy.model.backbone.net.keep_rates = [1.0] * len(lazy.model.backbone.net.keep_rates)
    lazy.model.action_head.drop_path_rate = 0.3
    with torch.device("meta"):
        changed = instantiate(lazy.model)
    diff = [n for n, s in module_settings(changed).items() if s != expected[n]]
    assert "backbone.net" in diff and "action_head.blocks.1.drop_path" in diff


def test_the_quickstart_models_compute_the_same_detections():
    lazy, cfg = load_pair("quickstart")
    yacs_model = build_model(cfg).eval()
    lazy_model = instantiate(lazy.model).eval()
    lazy_model.load_state_dict(yacs_model.state_dict())
    for name, buf in yacs_model.named_buffers():  # non-persistent ones too (pixel stats, tables)
        torch.testing.assert_close(dict(lazy_model.named_buffers())[name], buf, msg=name)
    for m in (yacs_model, lazy_model):
        m.score_thresh = 0.0  # every proposal out: compares all 36 of them
    clip = torch.rand(3, 8, 120, 160, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        a, b = (m([{"clip": clip, "height": 120, "width": 160}])[0]["instances"] for m in (yacs_model, lazy_model))
    assert len(a) == len(b) == 36
    torch.testing.assert_close(b.pred_boxes.tensor, a.pred_boxes.tensor)
    torch.testing.assert_close(b.pred_action_scores, a.pred_action_scores)


@pytest.mark.parametrize("which", sorted(PAIRS))
def test_lazy_and_yacs_configs_build_the_same_data_pipeline(which):
    lazy, cfg = load_pair(which)
    train, test = lazy.dataloader.train, lazy.dataloader.test
    assert plain(train.dataset.names) == list(cfg.DATASETS.TRAIN)
    assert train.dataset.filter_empty == cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    assert plain(test.dataset.names) == list(cfg.DATASETS.TEST) and test.dataset.filter_empty is False
    assert train.total_batch_size == cfg.SOLVER.IMS_PER_BATCH
    assert train.aspect_ratio_grouping == cfg.DATALOADER.ASPECT_RATIO_GROUPING
    assert train.num_workers == test.num_workers == cfg.DATALOADER.NUM_WORKERS
    assert lazy.dataloader.evaluator.dataset_name == cfg.DATASETS.TEST[0]
    assert lazy.dataloader.evaluator.protocol == cfg.TEST.AVA_PROTOCOL
    # The mappers, built with the same label-map ids (the real datasets need not be on disk).
    name = f"lazy_test_ids_{which}"
    MetadataCatalog.get(name).set(action_ids=list(range(1, cfg.MODEL.EVAD.NUM_ACTION_CLASSES + 1)))
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), (name,)
    for is_train, node in ((True, train.mapper), (False, test.mapper)):
        node.action_ids.dataset_name = name
        ours, theirs = instantiate(node), ClipDatasetMapper(cfg, is_train=is_train)
        assert [(type(a), settings(a)) for a in ours.augmentations] == [(type(a), settings(a)) for a in theirs.augmentations]
        assert len(ours.augmentations) == (2 if is_train and which == "vit_b" else 1)
        assert settings(ours) == settings(theirs), is_train


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("which", sorted(PAIRS))
def test_lazy_and_yacs_configs_build_the_same_optimizer_schedule_and_run(which):
    lazy, cfg = load_pair(which)
    with torch.device("meta"):
        model = instantiate(lazy.model)
    lazy.optimizer.params.model = model
    ours, theirs = instantiate(lazy.optimizer), build_optimizer(cfg, model)
    assert type(ours).__name__ == type(theirs).__name__ and ours.defaults == theirs.defaults
    groups = [[(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in o.param_groups] for o in (ours, theirs)]
    assert groups[0] == groups[1]
    # The schedule: 1000 training clips, epochs turned into iterations the same way.
    cfg = cfg.clone()
    cfg.defrost()
    per_epoch = resolve_epoch_schedule(cfg, 1000)
    max_iter, lazy_per_epoch = LazyEVADTrainer._resolve_schedule(lazy, 1000)
    assert (max_iter, lazy_per_epoch) == (cfg.SOLVER.MAX_ITER, per_epoch)
    lazy.lr_multiplier.max_iter, lazy.lr_multiplier.iters_per_epoch = max_iter, per_epoch
    multiplier = instantiate(lazy.lr_multiplier)
    yacs_sched = build_lr_scheduler(cfg, theirs)
    for it in range(max_iter):
        assert multiplier(it / max_iter) * cfg.SOLVER.BASE_LR == pytest.approx(yacs_sched.get_last_lr()[0], rel=1e-9), it
        yacs_sched.step()
    t, s = lazy.train, cfg.SOLVER
    assert (t.device, t.seed, t.init_checkpoint, t.max_epochs) == (cfg.MODEL.DEVICE, cfg.SEED, cfg.MODEL.WEIGHTS, s.MAX_EPOCHS)
    assert (t.amp.enabled, t.amp.precision) == (s.AMP.ENABLED, s.AMP.PRECISION)
    assert (t.checkpointer.period, t.eval_period, t.cudnn_benchmark) == (s.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD, cfg.CUDNN_BENCHMARK)
    c = cfg.MODEL.EVAD.CHECKPOINT
    assert (t.checkpointer.skip_shape_mismatch, t.checkpointer.videomae_decoder_init, t.checkpointer.new_action_classes) == (
        c.SKIP_SHAPE_MISMATCH, c.VIDEOMAE_DECODER_INIT, c.NEW_ACTION_CLASSES,
    )
    assert t.ddp.find_unused_parameters == (not cfg.MODEL.EVAD.LOSS.DEEP_SUPERVISION)
    assert t.output_dir == cfg.OUTPUT_DIR + "_lazy"  # a lazy run does not overwrite the yacs one


def test_multistep_lr_multiplier_by_hand():
    # 10 iterations per epoch: warm-up 1 epoch (10 it) from 0.1, steps after epochs 2 and 3.5.
    hand = dict(warmup_method="linear", rescale_interval=False)
    m = multistep_lr_multiplier(max_iter=40, steps=(2, 3.5), warmup=1, iters_per_epoch=10, gamma=0.1, warmup_factor=0.1, **hand)
    values = [m(i / 40) for i in range(40)]
    assert values[0] == pytest.approx(0.1) and values[5] == pytest.approx(0.1 + 0.9 * 5 / 10)
    assert values[10:20] == pytest.approx([1.0] * 10)
    assert values[20:35] == pytest.approx([0.1] * 15) and values[35:] == pytest.approx([0.01] * 5)
    # In iterations when iters_per_epoch is None; a step past max_iter is ignored.
    m = multistep_lr_multiplier(max_iter=10, steps=(5, 12), warmup=0, gamma=0.5, warmup_factor=0.1, **hand)
    assert [m(i / 10) for i in (0, 4, 5, 9)] == pytest.approx([1.0, 1.0, 0.5, 0.5])
    with pytest.raises(LazyConfigError, match="lr_multiplier.steps must increase"):
        multistep_lr_multiplier(max_iter=10, steps=(5, 3), warmup=0, gamma=0.5, warmup_factor=0.1, **hand)


def test_a_missing_train_key_names_the_file_and_key(tmp_path):
    lazy = LazyConfig.load(LAZY_QUICKSTART)
    del lazy.train["log_period"]
    path = str(tmp_path / "broken.py")
    LazyConfig.save(lazy, path.replace(".py", ".yaml"))
    with pytest.raises(LazyConfigError, match=r"broken.yaml: 'train.log_period' is missing"):
        load_lazy_config(path.replace(".py", ".yaml"))
    with pytest.raises(LazyConfigError, match="give a positive train.max_epochs"):
        load_lazy_config(LAZY_QUICKSTART, ["train.max_epochs=0"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava_like_lazy")
    generate(str(root), GeneratorSettings(seed=3, num_train_videos=2, num_val_videos=1, duration=5), log=lambda *a: None)
    names = {split: f"lazy_cfg_test_{split}" for split in ("train", "val")}
    for split, name in names.items():
        register_ava(name, str(root), split, "2.2", "video")
    return names


def lazy_args(dataset, out_dir, *extra, eval_only=False, resume=False):
    argv = ["--config-file", LAZY_QUICKSTART] + (["--eval-only"] if eval_only else []) + (["--resume"] if resume else [])
    train, val = dataset["train"], dataset["val"]
    return default_argument_parser().parse_args(argv + [
        f"dataloader.train.dataset.names=[{train}]", f"dataloader.train.mapper.action_ids.dataset_name={train}",
        f"dataloader.test.dataset.names=[{val}]", f"dataloader.test.mapper.action_ids.dataset_name={val}",
        f"dataloader.evaluator.dataset_name={val}",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "model.score_thresh=0.0", "train.checkpointer.period=2", "train.seed=7", f"train.output_dir={out_dir}",
    ] + list(extra))


def run_lazy(args, stop_after=None):
    """Train as lazy_train_and_evaluate does; (trainer, {iteration: total_loss}), optionally
    interrupted (KeyboardInterrupt) after iteration ``stop_after``."""
    trainer = LazyEVADTrainer(lazy_setup(args))
    trainer.resume_or_load(resume=args.resume)
    return train_until(trainer, stop_after)


def test_lazy_training_resumes_exactly_and_evaluates(dataset, tmp_path):
    """4 iterations straight; interrupted after 2 and resumed: the same losses and final weights;
    --eval-only of the final model repeats the end-of-training evaluation."""
    common = ("train.max_epochs=0", "train.max_iter=4", "lr_multiplier.steps=[3]", "lr_multiplier.warmup=1")
    trainer, straight = run_lazy(lazy_args(dataset, tmp_path / "a", *common))
    assert sorted(straight) == [0, 1, 2, 3] and all(math.isfinite(v) for v in straight.values())
    end_of_training = trainer._last_eval_results
    assert math.isfinite(end_of_training["ava"]["frame_mAP@0.5"])
    for name in ("model_final.pth", "model_0000001.pth", "config.yaml", "metrics.json", "log.txt"):
        assert os.path.exists(tmp_path / "a" / name), name
    assert os.path.exists(tmp_path / "a" / "inference" / dataset["val"] / "ava_detections.csv")

    _, partial = run_lazy(lazy_args(dataset, tmp_path / "b", *common), stop_after=2)
    assert sorted(partial) == [0, 1, 2]
    with open(tmp_path / "b" / "last_checkpoint") as f:
        assert f.read().strip() == "model_0000001.pth"
    resumed, rest = run_lazy(lazy_args(dataset, tmp_path / "b", *common, resume=True))
    assert resumed.start_iter == 2 and resumed._train_sampler.start == 4 and sorted(rest) == [2, 3]
    for it in (2, 3):  # the same clips, augmentation draws, optimizer and lr states
        assert rest[it] == pytest.approx(straight[it], rel=1e-5), it
    final = [torch.load(tmp_path / d / "model_final.pth", weights_only=True)["model"] for d in ("a", "b")]
    for k, v in final[0].items():
        torch.testing.assert_close(final[1][k], v, rtol=1e-4, atol=1e-5, msg=k)

    with EventStorage():
        again = lazy_train_and_evaluate(
            lazy_args(dataset, tmp_path / "c", f"train.init_checkpoint={tmp_path / 'a' / 'model_final.pth'}", eval_only=True)
        )
    assert again["ava"]["frame_mAP@0.5"] == pytest.approx(end_of_training["ava"]["frame_mAP@0.5"], abs=1e-9)
    assert again["ava"]["person_AP@0.5"] == pytest.approx(end_of_training["ava"]["person_AP@0.5"], abs=1e-9)


def test_lazy_epoch_schedule_comes_from_the_training_set(dataset, tmp_path):
    args = lazy_args(dataset, tmp_path, "train.max_epochs=2", "lr_multiplier.steps=[1]", "lr_multiplier.warmup=0.5")
    trainer = LazyEVADTrainer(lazy_setup(args))
    per_epoch = math.ceil(len(trainer._train_dataset) / 2)
    assert trainer.max_iter == 2 * per_epoch
    assert trainer.cfg.lr_multiplier.iters_per_epoch == per_epoch
    assert trainer._train_sampler.start == 0
    # config.yaml is the config that runs: the schedule resolved from the epochs.
    saved = load_lazy_config(str(tmp_path / "config.yaml"))
    assert (saved.lr_multiplier.max_iter, saved.lr_multiplier.iters_per_epoch) == (2 * per_epoch, per_epoch)
    assert saved.train.max_epochs == 2 and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["videomae", "official_evad"])
def test_lazy_trainer_loads_other_formats_through_the_evad_checkpointer(dataset, tmp_path, kind):
    """train.init_checkpoint in VideoMAE's layout (DDP "module." prefix, a classifier head: the
    ViT gets its weights, the head is ignored) or an official EVAD release file (every tensor,
    converted) is recognised and converted."""
    torch.manual_seed(3)
    source = instantiate(LazyConfig.load(LAZY_QUICKSTART).model)
    if kind == "videomae":
        expected = {f"backbone.net.{k}": v for k, v in source.backbone.net.state_dict().items()}
        weights = {"module": {**source.backbone.net.state_dict(), "head.weight": torch.zeros(400, 128), "head.bias": torch.zeros(400)}}
    else:
        expected = source.state_dict()
        weights = {"epoch": 5, "model_state": evad_d2_to_official(source.state_dict())}
    path = tmp_path / "weights.pth"
    torch.save(weights, path)
    args = lazy_args(dataset, tmp_path / "out", "train.max_epochs=0", "train.max_iter=1", f"train.init_checkpoint={path}")
    trainer = LazyEVADTrainer(lazy_setup(args))
    trainer.resume_or_load(resume=False)
    assert trainer.checkpointer.last_load["format"] == kind
    loaded = trainer.model.state_dict()
    assert len(expected) > 50
    for k, v in expected.items():
        torch.testing.assert_close(loaded[k], v, msg=k)
    assert trainer.start_iter == 0


@pytest.mark.slow
def test_train_net_trains_a_lazy_config_in_two_processes(tmp_path):
    """train_net.py --config-file X.py through detectron2's launch: 2 CPU processes (gloo)."""
    # The config's ava_like_* names read $EVAD_DATASETS/generated/ava_like.
    root = tmp_path / "datasets" / "generated" / "ava_like"
    generate(str(root), GeneratorSettings(seed=3, num_train_videos=2, num_val_videos=1, duration=5), log=lambda *a: None)
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", LAZY_QUICKSTART, "--num-gpus", "2",
         "train.max_epochs=0", "train.max_iter=2", "lr_multiplier.steps=[]", "lr_multiplier.warmup=0",
         "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
         f"train.output_dir={out}"],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "EVAD_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log and "AVA 'ava_like_val': frame-mAP@0.5 = " in log


def test_derived_values_follow_an_override():
    """The heads' input widths and the actor pooler's stride are interpolations of the backbone's."""
    lazy = load_lazy_config(LAZY_QUICKSTART, ["model.backbone.net.embed_dim=96", "model.backbone.out_channels=32",
                                              "model.localization_head.hidden_dim=32"])
    with torch.device("meta"):
        model = instantiate(lazy.model)
    assert model.action_head.encoder_to_decoder.in_features == 96
    assert model.backbone.fpn_lateral2.in_channels == 96 and model.backbone.fpn_lateral2.out_channels == 32
    assert model.localization_head.init_proposal_features.embedding_dim == 32
    assert model.action_head.pooler.stride == 16
