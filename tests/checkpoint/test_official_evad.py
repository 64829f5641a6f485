"""Official EVAD checkpoints: key/shape mapping, round trip, loading, config overrides, the tool.

The official layout is written out here from the official modules' structure (MCG-NJU/EVAD:
``EVAD`` = ViT + FPN convs + proposals + ``det_head``: ``EVADRoIHead`` with ``s0_headseries``
(``RCNNHead`` x stages), ``encoder_to_decoder``, ``mask_token`` (1, 1, D), ``decoder.blocks``
(``Block`` with ``act_module`` and ``action_logits``), and the criterion's ``empty_weight`` buffer),
independently of the converter's rules.
"""
import subprocess
import sys
import os

import pytest
import torch

from evad_d2.checkpoint import (
    CheckpointFormatError,
    EVADCheckpointer,
    evad_d2_to_official,
    official_config_overrides,
    official_to_evad_d2,
)
from evad_d2.checkpoint.convert_official import convert_official_checkpoint
from evad_d2.checkpoint.official_evad import roi_extension_note
from evad_d2.testing import REPO_ROOT as REPO, TINY_CONFIG, build_model_from_file

VIT_B_CONFIG = os.path.join(REPO, "configs", "AVA", "v2.2", "EVAD_ViT-B_K400_rho0.7_224.yaml")

VIT_B = dict(dim=768, depth=12, fpn=256, proposals=100, hidden=256, stages=6, ffn=2048, dyn=64, pool=7,
             dec_dim=384, dec_depth=6, act_dim=2048, classes=80)
TINY = dict(dim=48, depth=4, fpn=32, proposals=8, hidden=32, stages=2, ffn=64, dyn=8, pool=7,
            dec_dim=32, dec_depth=2, act_dim=64, classes=6)


def official_layout(dim, depth, fpn, proposals, hidden, stages, ffn, dyn, pool, dec_dim, dec_depth, act_dim, classes):
    """(key, shape) of every state-dict entry of the official EVAD model."""
    out = [("patch_embed.proj.weight", (dim, 3, 2, 16, 16)), ("patch_embed.proj.bias", (dim,))]

    def vit_block(prefix, d):
        return [
            (f"{prefix}norm1.weight", (d,)), (f"{prefix}norm1.bias", (d,)),
            (f"{prefix}attn.q_bias", (d,)), (f"{prefix}attn.v_bias", (d,)),
            (f"{prefix}attn.qkv.weight", (3 * d, d)),
            (f"{prefix}attn.proj.weight", (d, d)), (f"{prefix}attn.proj.bias", (d,)),
            (f"{prefix}norm2.weight", (d,)), (f"{prefix}norm2.bias", (d,)),
            (f"{prefix}mlp.fc1.weight", (4 * d, d)), (f"{prefix}mlp.fc1.bias", (4 * d,)),
            (f"{prefix}mlp.fc2.weight", (d, 4 * d)), (f"{prefix}mlp.fc2.bias", (d,)),
        ]

    for i in range(depth):
        out += vit_block(f"blocks.{i}.", dim)
    out += [("norm.weight", (dim,)), ("norm.bias", (dim,))]
    for s in range(2, 6):
        out += [(f"fpn_lateral{s}.weight", (fpn, dim, 1, 1)), (f"fpn_lateral{s}.bias", (fpn,)),
                (f"fpn_output{s}.weight", (fpn, fpn, 3, 3)), (f"fpn_output{s}.bias", (fpn,))]
    out += [("init_proposal_features.weight", (proposals, hidden)), ("init_proposal_boxes.weight", (proposals, 4))]
    for i in range(stages):
        p = f"det_head.s0_headseries.{i}."
        out += [
            (p + "self_attn.in_proj_weight", (3 * hidden, hidden)), (p + "self_attn.in_proj_bias", (3 * hidden,)),
            (p + "self_attn.out_proj.weight", (hidden, hidden)), (p + "self_attn.out_proj.bias", (hidden,)),
            (p + "inst_interact.dynamic_layer.weight", (2 * hidden * dyn, hidden)),
            (p + "inst_interact.dynamic_layer.bias", (2 * hidden * dyn,)),
            (p + "inst_interact.norm1.weight", (dyn,)), (p + "inst_interact.norm1.bias", (dyn,)),
            (p + "inst_interact.norm2.weight", (hidden,)), (p + "inst_interact.norm2.bias", (hidden,)),
            (p + "inst_interact.out_layer.weight", (hidden, hidden * pool * pool)),
            (p + "inst_interact.out_layer.bias", (hidden,)),
            (p + "inst_interact.norm3.weight", (hidden,)), (p + "inst_interact.norm3.bias", (hidden,)),
            (p + "linear1.weight", (ffn, hidden)), (p + "linear1.bias", (ffn,)),
            (p + "linear2.weight", (hidden, ffn)), (p + "linear2.bias", (hidden,)),
        ]
        for n in (1, 2, 3):
            out += [(p + f"norm{n}.weight", (hidden,)), (p + f"norm{n}.bias", (hidden,))]
        out += [(p + "cls_module.0.weight", (hidden, hidden)),
                (p + "cls_module.1.weight", (hidden,)), (p + "cls_module.1.bias", (hidden,))]
        for j in range(3):  # NUM_REG = 3: (Linear no bias, LayerNorm, ReLU) x 3
            out += [(p + f"reg_module.{3 * j}.weight", (hidden, hidden)),
                    (p + f"reg_module.{3 * j + 1}.weight", (hidden,)), (p + f"reg_module.{3 * j + 1}.bias", (hidden,))]
        out += [(p + "class_logits.weight", (2, hidden)), (p + "class_logits.bias", (2,)),
                (p + "bboxes_delta.weight", (4, hidden)), (p + "bboxes_delta.bias", (4,))]
    out += [("det_head.encoder_to_decoder.weight", (dec_dim, dim)), ("det_head.mask_token", (1, 1, dec_dim))]
    for i in range(dec_depth):
        p = f"det_head.decoder.blocks.{i}."
        out += vit_block(p, dec_dim)
        out += [(p + "act_module.0.weight", (act_dim, dec_dim)),
                (p + "act_module.1.weight", (act_dim,)), (p + "act_module.1.bias", (act_dim,)),
                (p + "action_logits.weight", (classes, act_dim)), (p + "action_logits.bias", (classes,))]
    out.append(("criterion.empty_weight", (2,)))
    return out


def official_state_dict(sizes, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_layout(**sizes):
        if device == "meta":
            sd[key] = torch.empty(shape, device="meta")
        elif key == "criterion.empty_weight":
            sd[key] = torch.tensor([1.0, 0.1])
        else:
            sd[key] = torch.randn(shape, generator=g)
    return sd


OFFICIAL_CFG_YAML = """
DATA:
  NUM_FRAMES: 8
  SAMPLING_RATE: 2
  MEAN: [0.45, 0.45, 0.45]
  STD: [0.225, 0.225, 0.225]
AVA:
  MIN_SIZE_TEST: 288
  MAX_SIZE_TEST: 1333
ViT:
  EMBED_DIM: 48
  DEPTH: 4
  NUM_HEADS: 4
  DROP_PATH_RATE: 0.1
  FPN_INDICES: [0, 1, 2, 3]
  USE_LEARNABLE_POS_EMB: false
  INIT_VALUES: 0.0
MODEL:
  NUM_CLASSES: 6
  KTP:
    KEEP_RATES: [1, 0.6, 1, 0.6]
    ENHANCED_WEIGHT: 4
  CRD:
    ROI_EXTENSION: (0.4, 0.2)
    EMBED_DIM: 32
    DEPTH: 2
    NUM_HEADS: 4
    DROP_PATH_RATE: 0.1
    USE_LEARNABLE_POS_EMB: false
  SparseRCNN:
    NUM_PROPOSALS: 8
    HIDDEN_DIM: 32
    NUM_HEADS: 2
    NHEADS: 4
    DIM_FEEDFORWARD: 64
    DIM_DYNAMIC: 8
    NUM_DYNAMIC: 2
    ACT_FC_DIM: 64
    PERSON_THRESHOLD: 0.7
    NUM_CLS: 1
    NUM_REG: 3
    NUM_ACT: 1
    JITTER_BOX: false
"""


def test_official_layout_matches_published_parameter_counts():
    # The notes' counts (official code run on the CPU): this checks the test's layout itself.
    layout = dict(official_layout(**VIT_B))
    numel = {k: torch.Size(s).numel() for k, s in layout.items()}
    params = {k: n for k, n in numel.items() if k != "criterion.empty_weight"}
    assert sum(params.values()) == 185_359_636
    assert sum(n for k, n in params.items() if k.startswith(("patch_embed", "blocks", "norm."))) == 86_227_200
    assert sum(n for k, n in params.items() if k.startswith("fpn_")) == 3_147_776
    assert sum(n for k, n in params.items() if k.startswith("det_head.s0_headseries.0.")) == 13_215_366
    classifier = sum(
        n for k, n in params.items()
        if k.startswith(("det_head.decoder.blocks.0.act_module", "det_head.decoder.blocks.0.action_logits"))
    )
    assert classifier == 954_448


def test_vit_b_official_keys_and_shapes_map_onto_every_model_tensor():
    official = official_state_dict(VIT_B, device="meta")
    converted, report = official_to_evad_d2(official)
    model_sd = build_model_from_file(VIT_B_CONFIG, device="meta").state_dict()
    assert set(converted) == set(model_sd)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in model_sd.items()}
    assert sum(v.numel() for v in converted.values()) == 185_359_636
    assert report.ignored == {"criterion.empty_weight": report.ignored["criterion.empty_weight"]}
    assert [t[:3] for t in report.transformed] == [("action_head.mask_token", (1, 1, 384), (384,))]
    back = evad_d2_to_official(converted)
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in official.items()}


def test_round_trip_gives_identical_tensors():
    official = official_state_dict(TINY)
    converted, _ = official_to_evad_d2(official)
    back = evad_d2_to_official(converted, no_object_weight=0.1)
    assert set(back) == set(official)
    for key, value in official.items():
        assert torch.equal(back[key], value), key
    # spot checks of where values land
    assert torch.equal(converted["action_head.mask_token"], official["det_head.mask_token"][0, 0])
    assert torch.equal(
        converted["action_head.classifiers.1.action_logits.weight"],
        official["det_head.decoder.blocks.1.action_logits.weight"],
    )
    assert torch.equal(converted["action_head.blocks.1.attn.q_bias"], official["det_head.decoder.blocks.1.attn.q_bias"])
    assert torch.equal(
        converted["localization_head.stages.1.reg_module.6.weight"],
        official["det_head.s0_headseries.1.reg_module.6.weight"],
    )
    assert torch.equal(converted["backbone.fpn_output5.bias"], official["fpn_output5.bias"])
    assert torch.equal(converted["backbone.net.blocks.3.attn.qkv.weight"], official["blocks.3.attn.qkv.weight"])


@pytest.mark.parametrize(
    "extra_key, shape",
    [
        ("det_head.pos_embed", (1, 64, 32)),  # learned decoder position table: no counterpart
        ("det_head.decoder.blocks.0.act_module.3.weight", (64, 64)),  # NUM_ACT = 2
        ("det_head.s0_headseries.0.gamma", (32,)),
    ],
)
def test_unmapped_official_key_fails_loudly(extra_key, shape):
    official = official_state_dict(TINY)
    official[extra_key] = torch.zeros(shape)
    with pytest.raises(CheckpointFormatError, match="no counterpart") as e:
        official_to_evad_d2(official)
    assert extra_key in str(e.value)


def test_checkpointer_loads_official_release_file(tmp_path, caplog):
    official = official_state_dict(TINY)
    path = str(tmp_path / "evad_official.pth")
    torch.save({"epoch": 11, "model_state": official, "optimizer_state": {}, "cfg": OFFICIAL_CFG_YAML}, path)
    model = build_model_from_file(TINY_CONFIG)
    checkpointer = EVADCheckpointer(model)
    checkpointer.load(path)
    info = checkpointer.last_load
    assert info["format"] == "official_evad"
    assert info["missing"] == [] and info["unexpected"] == [] and info["missing_expected"] == []
    assert len(info["loaded"]) == len(model.state_dict())
    back = evad_d2_to_official(model.state_dict())
    for key, value in official.items():
        assert torch.equal(back[key], value), key
    # The tiny config differs from the file's inference settings: the report says which to set.
    notes = " ".join(info["report"].warnings)
    assert "MODEL.EVAD.OFFICIAL_MODE True" in notes
    assert "MODEL.EVAD.KEEP_RATES" in notes and "MODEL.EVAD.KEYFRAME_WEIGHT" in notes


def test_pyth_release_of_official_evad_is_converted(tmp_path):
    # PySlowFast, which the official EVAD code is, saves .pyth files with "model_state".
    official = official_state_dict(TINY)
    path = tmp_path / "checkpoint_epoch_00011.pyth"
    torch.save({"epoch": 11, "model_state": official, "cfg": OFFICIAL_CFG_YAML}, str(path))
    model = build_model_from_file(TINY_CONFIG)
    checkpointer = EVADCheckpointer(model)
    checkpointer.load(str(path))
    assert checkpointer.last_load["format"] == "official_evad" and checkpointer.last_load["missing"] == []


def test_checkpointer_official_settings_match_gives_no_warning(tmp_path):
    path = str(tmp_path / "evad_official.pth")
    torch.save({"epoch": 11, "model_state": official_state_dict(TINY), "cfg": OFFICIAL_CFG_YAML}, path)
    model = build_model_from_file(
        TINY_CONFIG, "MODEL.EVAD.OFFICIAL_MODE", True,
        "MODEL.EVAD.KEEP_RATES", [1.0, 0.6, 1.0, 0.6], "MODEL.EVAD.KEYFRAME_WEIGHT", 4.0,
    )
    checkpointer = EVADCheckpointer(model)
    checkpointer.load(path)
    assert checkpointer.last_load["report"].warnings == []


def test_official_file_without_config_still_checks_the_official_mode_switch(tmp_path):
    path = str(tmp_path / "evad_official.pth")
    torch.save({"model_state": official_state_dict(TINY)}, path)
    # The two older switches alone are not enough: clipping, threshold and resize still differ.
    model = build_model_from_file(TINY_CONFIG, "MODEL.EVAD.DECODER.OFFICIAL_TOKEN_ORDER", True, "MODEL.EVAD.LOC.KEEP_ALL_IF_NONE", True)
    checkpointer = EVADCheckpointer(model)
    checkpointer.load(path)
    (warning,) = checkpointer.last_load["report"].warnings
    assert warning.endswith("to reproduce official outputs set MODEL.EVAD.OFFICIAL_MODE True")
    checkpointer = EVADCheckpointer(build_model_from_file(TINY_CONFIG, "MODEL.EVAD.OFFICIAL_MODE", True))
    checkpointer.load(path)
    assert checkpointer.last_load["report"].warnings == []


def test_official_mode_switch_turns_on_every_official_behaviour():
    default = build_model_from_file(TINY_CONFIG)
    assert not (default.official_mode or default.keep_all_if_none or default.action_head.official_token_order)
    official = build_model_from_file(TINY_CONFIG, "MODEL.EVAD.OFFICIAL_MODE", True)
    # >= threshold and [0, w-1] clipping (official_mode), all proposals when none passes,
    # the official decoder token order; the resize is the predictor's (test_predictor_demo).
    assert official.official_mode and official.keep_all_if_none and official.action_head.official_token_order
    # The older switches keep working alone, without the rest of official mode.
    alone = build_model_from_file(TINY_CONFIG, "MODEL.EVAD.LOC.KEEP_ALL_IF_NONE", True)
    assert alone.keep_all_if_none and not alone.official_mode and not alone.action_head.official_token_order


# The released keep-rate-1.0 config (official ViT_B_16x4.yaml) does not name MODEL.CRD.ROI_EXTENSION:
# the official default (0, 0) applies; the pruned ones (..._KTP*.yaml) set (0.4, 0.2).
RHO1_CFG_YAML = OFFICIAL_CFG_YAML.replace("    KEEP_RATES: [1, 0.6, 1, 0.6]\n    ENHANCED_WEIGHT: 4\n", "").replace(
    "    ROI_EXTENSION: (0.4, 0.2)\n", ""
)


def test_roi_extension_of_rho1_and_pruned_official_configs():
    assert "KEEP_RATES" not in RHO1_CFG_YAML and "ROI_EXTENSION" not in RHO1_CFG_YAML
    assert dict(official_config_overrides(RHO1_CFG_YAML)[0])["MODEL.EVAD.DECODER.ROI_EXTEND"] == [0.0, 0.0]
    assert dict(official_config_overrides(OFFICIAL_CFG_YAML)[0])["MODEL.EVAD.DECODER.ROI_EXTEND"] == [0.4, 0.2]
    # Written out as a full dump does it (keep rates all 1, extension (0, 0)).
    dumped = OFFICIAL_CFG_YAML.replace("[1, 0.6, 1, 0.6]", "[1, 1, 1, 1]").replace("(0.4, 0.2)", "[0.0, 0.0]")
    assert dict(official_config_overrides(dumped)[0])["MODEL.EVAD.DECODER.ROI_EXTEND"] == [0.0, 0.0]
    assert roi_extension_note(RHO1_CFG_YAML) == (
        "RoI extension MODEL.EVAD.DECODER.ROI_EXTEND [0.0, 0.0] from the official default; the file's config "
        "does not set MODEL.CRD.ROI_EXTENSION (keep rates not in the file's config (official default: all 1.0))"
    )
    assert "ViT_B_16x4.yaml" in roi_extension_note(dumped)
    assert roi_extension_note(OFFICIAL_CFG_YAML).startswith(
        "RoI extension MODEL.EVAD.DECODER.ROI_EXTEND [0.4, 0.2] from the file's MODEL.CRD.ROI_EXTENSION (pruned"
    )
    assert "[0.0,0.0] for a keep-rate-1.0 checkpoint" in roi_extension_note(None)


def test_checkpointer_reports_the_roi_extension_of_a_rho1_official_checkpoint(tmp_path):
    path = str(tmp_path / "evad_official_rho1.pth")
    torch.save({"model_state": official_state_dict(TINY), "cfg": RHO1_CFG_YAML}, path)
    model = build_model_from_file(TINY_CONFIG, "MODEL.EVAD.OFFICIAL_MODE", True, "MODEL.EVAD.KEEP_RATES", [1.0] * 4)
    assert model.action_head.pooler.roi_extend == (0.4, 0.2)  # the tiny config's
    checkpointer = EVADCheckpointer(model)
    checkpointer.load(path)
    (warning,) = checkpointer.last_load["report"].warnings
    assert warning.endswith("to reproduce official outputs set MODEL.EVAD.DECODER.ROI_EXTEND [0.0, 0.0]")


def test_official_checkpoint_into_linear_head_model_is_an_error(tmp_path):
    path = str(tmp_path / "evad_official.pth")
    torch.save({"model_state": official_state_dict(TINY)}, path)
    model = build_model_from_file(TINY_CONFIG, "MODEL.EVAD.ACTION_HEAD", "linear")
    with pytest.raises(CheckpointFormatError, match="no place for"):
        EVADCheckpointer(model).load(path)


def test_official_config_overrides():
    overrides, warnings = official_config_overrides(OFFICIAL_CFG_YAML)
    o = dict(overrides)
    assert o["MODEL.EVAD.KEEP_RATES"] == [1.0, 0.6, 1.0, 0.6]
    assert o["MODEL.EVAD.KEYFRAME_WEIGHT"] == 4.0
    assert o["MODEL.EVAD.DECODER.ROI_EXTEND"] == [0.4, 0.2]
    assert o["MODEL.EVAD.DECODER.DROP_PATH_RATE"] == 0.1
    assert o["MODEL.EVAD.LOC.NUM_STAGES"] == 2 and o["MODEL.EVAD.LOC.NUM_HEADS"] == 4
    assert o["INPUT.MIN_SIZE_TEST"] == 288
    assert o["MODEL.PIXEL_MEAN"] == [114.75] * 3 and o["MODEL.PIXEL_STD"] == [57.375] * 3
    # One switch for every official behaviour; the ones it implies are not listed again.
    assert o["MODEL.EVAD.OFFICIAL_MODE"] is True
    assert "MODEL.EVAD.DECODER.OFFICIAL_TOKEN_ORDER" not in o and "MODEL.EVAD.LOC.KEEP_ALL_IF_NONE" not in o
    assert warnings == []
    _, warnings = official_config_overrides(OFFICIAL_CFG_YAML.replace("JITTER_BOX: false", "JITTER_BOX: true"))
    assert len(warnings) == 1 and "JITTER_BOX" in warnings[0]


def test_convert_tool_writes_a_loadable_checkpoint(tmp_path, capsys):
    official = official_state_dict(TINY)
    src, dst = str(tmp_path / "official.pth"), str(tmp_path / "converted.pth")
    torch.save({"epoch": 11, "model_state": official, "cfg": OFFICIAL_CFG_YAML}, src)
    assert convert_official_checkpoint(src, dst, config_file=TINY_CONFIG) == 0
    out = capsys.readouterr().out
    assert "verified: all" in out and "MODEL.EVAD.OFFICIAL_MODE True" in out.splitlines()[-1]
    assert "MODEL.EVAD.KEEP_RATES [1.0,0.6,1.0,0.6]" in out
    # The tiny config's extension is the pruned file's: nothing to override, and the report says why.
    assert "RoI extension MODEL.EVAD.DECODER.ROI_EXTEND [0.4, 0.2] from the file's" in out
    assert "MODEL.EVAD.DECODER.ROI_EXTEND" not in out.splitlines()[-1]
    assert not [f for f in os.listdir(tmp_path) if f not in ("official.pth", "converted.pth")]  # no temporaries
    model = build_model_from_file(TINY_CONFIG)
    checkpointer = EVADCheckpointer(model)
    extra = checkpointer.load(dst)
    assert checkpointer.last_load["format"] == "evad_d2" and checkpointer.last_load["missing"] == []
    assert ["MODEL.EVAD.KEEP_RATES", [1.0, 0.6, 1.0, 0.6]] in extra["official_config_overrides"]
    back = evad_d2_to_official(model.state_dict())
    for key, value in official.items():
        assert torch.equal(back[key], value), key


def test_convert_tool_sets_the_roi_extension_of_a_rho1_checkpoint(tmp_path, capsys):
    src, dst = str(tmp_path / "official_rho1.pth"), str(tmp_path / "converted.pth")
    torch.save({"model_state": official_state_dict(TINY), "cfg": RHO1_CFG_YAML}, src)
    assert convert_official_checkpoint(src, dst, config_file=TINY_CONFIG) == 0
    command = capsys.readouterr().out.splitlines()[-1]
    assert command.startswith("evaluate with: python train_net.py")
    assert "MODEL.EVAD.DECODER.ROI_EXTEND [0.0,0.0]" in command and "MODEL.EVAD.OFFICIAL_MODE True" in command
    # Without a stored config the tool cannot know: a warning says which extension fits which checkpoint.
    torch.save({"model_state": official_state_dict(TINY)}, src)
    assert convert_official_checkpoint(src, dst, config_file=TINY_CONFIG) == 0
    out = capsys.readouterr().out
    assert "WARNING: RoI extension unknown (the file has no training config)" in out
    assert "MODEL.EVAD.OFFICIAL_MODE True" in out.splitlines()[-1]


def test_convert_tool_checks_against_the_model_and_rejects_other_formats(tmp_path):
    src = str(tmp_path / "videomae.pth")
    videomae = {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 16, 16), "blocks.0.norm1.weight": torch.zeros(4)}
    torch.save({"module": videomae}, src)
    with pytest.raises(CheckpointFormatError, match="not an official EVAD checkpoint"):
        convert_official_checkpoint(src, str(tmp_path / "o.pth"), config_file=TINY_CONFIG, verify=False)
    # official weights of a wider decoder than the config: the check names the tensors
    src = str(tmp_path / "official.pth")
    torch.save({"model_state": official_state_dict(dict(TINY, dec_dim=40))}, src)
    with pytest.raises(CheckpointFormatError, match="action_head.mask_token: converted \\(40,\\) vs model \\(32,\\)"):
        convert_official_checkpoint(src, str(tmp_path / "o.pth"), config_file=TINY_CONFIG)


@pytest.mark.slow
def test_convert_tool_runs_as_a_script(tmp_path):
    """tools/convert_official_evad.py end to end, as a user runs it."""
    src, dst = str(tmp_path / "official.pth"), str(tmp_path / "converted.pth")
    torch.save({"model_state": official_state_dict(TINY), "cfg": OFFICIAL_CFG_YAML}, src)
    tool = os.path.join(REPO, "tools", "convert_official_evad.py")
    run = subprocess.run([sys.executable, tool, src, dst, "--config-file", TINY_CONFIG],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "verified: all" in run.stdout and run.stdout.splitlines()[-1].startswith("evaluate with:")
    assert os.path.isfile(dst)
