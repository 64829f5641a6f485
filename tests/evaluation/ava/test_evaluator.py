"""AVAEvaluator (evaluation/ava/evaluator.py) on fake model outputs."""
import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from evad_d2.evaluation.ava import (
    evaluate_ava_files,
)
from evad_d2.evaluation.ava.evaluator import AVAEvaluator
from evad_d2.testing import AVA_BOX_A as A, AVA_BOX_B as B, write_ava_files


H, W = 200, 400


MODEL_IDS = [4, 1, 2, 3]  # model column order differs from the id order on purpose


GT_EVAL = [("vidA", 902, A, 1, 0), ("vidA", 902, B, 2, 1), ("vidA", 902, B, 4, 1),
           ("vidA", 903, A, 4, 0), ("vidB", 902, B, 1, 0), ("vidB", 902, B, 3, 0)]


def _register(tmp_path, name):
    gt, _, lm, ex = write_ava_files(tmp_path, GT_EVAL, [], classes=(1, 2, 4))
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        action_ids=MODEL_IDS, action_classes=[f"act{i}" for i in MODEL_IDS], eval_action_ids=[1, 2, 4],
        label_map_file=lm, groundtruth_file=gt, exclusions_file=ex, evaluator_type="ava", frame_rate=30,
    )


def _fake_outputs(frames):
    """Model outputs that find every ground-truth person with the right actions."""
    inputs, outputs = [], []
    for video, ts in frames:
        people = {}
        for v, t, b, c, _ in GT_EVAL:
            if (v, t) == (video, ts):
                people.setdefault(b, set()).add(c)
        boxes = torch.tensor([[b[0] * W, b[1] * H, b[2] * W, b[3] * H] for b in people], dtype=torch.float32)
        actions = torch.tensor([[0.95 if i in acts else 0.02 for i in MODEL_IDS] for acts in people.values()])
        inst = Instances((H, W), pred_boxes=Boxes(boxes), scores=torch.full((len(people),), 0.9),
                         pred_action_scores=actions)
        inputs.append({"video_id": video, "timestamp": ts, "height": H, "width": W})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_evaluator_end_to_end(tmp_path):
    _register(tmp_path, "evad_test_ava_eval")
    out_dir = tmp_path / "out"
    ev = AVAEvaluator("evad_test_ava_eval", str(out_dir))
    ev.reset()
    inputs, outputs = _fake_outputs([("vidA", 902), ("vidA", 903), ("vidB", 902)])
    ev.process(inputs[:2], outputs[:2])
    ev.process(inputs[2:], outputs[2:])
    res = ev.evaluate()["ava"]
    assert res["frame_mAP@0.5"] == pytest.approx(100.0)
    assert res["person_AP@0.5"] == pytest.approx(100.0)
    assert set(k for k in res if k.startswith("AP-")) == {"AP-act1", "AP-act2", "AP-act4"}

    rows = [line.split(",") for line in (out_dir / "ava_detections.csv").read_text().splitlines()]
    assert len(rows) == 4 * 3  # 4 people x 3 evaluated classes; class 3 is not evaluated
    assert {int(r[6]) for r in rows} == {1, 2, 4}
    assert all(0.0 <= float(x) <= 1.0 for r in rows for x in r[2:6])
    # Box by box in the model's order (people A then B on vidA 0902), classes in eval_action_ids order.
    first_frame = [r for r in rows if r[0] == "vidA" and r[1] == "0902"]
    assert [[float(x) for x in r[2:6]] for r in first_frame] == [[0.1, 0.1, 0.4, 0.9]] * 3 + [[0.5, 0.2, 0.9, 0.8]] * 3
    assert [int(r[6]) for r in first_frame] == [1, 2, 4, 1, 2, 4]
    assert first_frame[0][2:6] == ["0.10000", "0.10000", "0.40000", "0.90000"]  # 5 decimals (see detection_rows)
    metrics = json.loads((out_dir / "ava_metrics.json").read_text())
    assert metrics["mAP"] == pytest.approx(100.0) and metrics["person_AP"] == pytest.approx(100.0)
    assert (out_dir / "ava_per_class_ap.png").read_bytes()[:4] == b"\x89PNG"
    # The written CSV gives the same number through the command line reader.
    again, _ = evaluate_ava_files(MetadataCatalog.get("evad_test_ava_eval").groundtruth_file,
                                  str(out_dir / "ava_detections.csv"), str(tmp_path / "map.pbtxt"))
    assert again.mean_ap == pytest.approx(1.0)


def test_evaluator_partial_run(tmp_path):
    _register(tmp_path, "evad_test_ava_eval_part")
    inputs, outputs = _fake_outputs([("vidA", 902)])
    results = {}
    for only in (False, True):
        ev = AVAEvaluator("evad_test_ava_eval_part", None, only_processed_keyframes=only)
        ev.reset()
        ev.process(inputs, outputs)
        results[only] = ev.evaluate()["ava"]
    assert results[True]["frame_mAP@0.5"] == pytest.approx(100.0)
    # Full protocol: act1 1/2 (vidB missed), act2 1, act4 1/2 (vidA 903 missed).
    assert results[False]["frame_mAP@0.5"] == pytest.approx(100 * (0.5 + 1 + 0.5) / 3)
    assert not os.path.exists(tmp_path / "ava_detections.csv")


def test_evaluator_metadata_errors(tmp_path):
    name = "evad_test_ava_eval_bad"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(action_ids=[1, 2], eval_action_ids=[1, 3], groundtruth_file="x.csv")
    with pytest.raises(KeyError, match=r"eval_action_ids \[3\]"):
        AVAEvaluator(name)
    MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(action_ids=[1, 2])
    with pytest.raises(KeyError, match="groundtruth_file"):
        AVAEvaluator(name)


def test_evaluator_scores_exactly_what_it_writes(tmp_path):
    """Scoring the in-memory rows equals the command line on the written CSV, to the last bit."""
    _register(tmp_path, "evad_test_ava_eval_exact")
    rng = np.random.default_rng(5)
    inputs, outputs = [], []
    for video, ts in [("vidA", 902), ("vidA", 903), ("vidB", 902), ("vidC", 950)]:
        boxes = torch.tensor([[b[0] * W, b[1] * H, b[2] * W, b[3] * H] for b in (A, B, A)], dtype=torch.float32)
        boxes += torch.from_numpy(rng.normal(0, 6, (3, 4))).float()
        actions = torch.from_numpy(rng.random((3, len(MODEL_IDS)))).float()
        actions[0, :2] = 0.5  # tied scores
        inputs.append({"video_id": video, "timestamp": ts, "height": H, "width": W})
        outputs.append({"instances": Instances((H, W), pred_boxes=Boxes(boxes), scores=torch.rand(3),
                                               pred_action_scores=actions)})
    results = {}
    for out_dir in (str(tmp_path / "out"), None):
        ev = AVAEvaluator("evad_test_ava_eval_exact", out_dir)
        ev.reset()
        ev.process(inputs, outputs)
        results[out_dir] = ev.evaluate()["ava"]
    res = results[str(tmp_path / "out")]
    assert res == results[None]
    assert 0 < res["frame_mAP@0.5"] < 100
    meta = MetadataCatalog.get("evad_test_ava_eval_exact")
    again, _ = evaluate_ava_files(meta.groundtruth_file, str(tmp_path / "out" / "ava_detections.csv"),
                                  meta.label_map_file, meta.exclusions_file)
    assert 100.0 * again.mean_ap == res["frame_mAP@0.5"]
    for c, ap in again.per_class_ap.items():
        if not math.isnan(ap):
            assert 100.0 * ap == res[f"AP-act{c}"]


def test_evaluator_person_ap_with_tied_duplicate_boxes(tmp_path):
    """The person predicted twice with one score: TP then FP, person AP 100 (ranked FP first: 50)."""
    _register(tmp_path, "evad_test_ava_eval_ties")
    inputs, outputs = _fake_outputs([("vidA", 903)])  # one person (box A)
    inst = outputs[0]["instances"]
    twice = Instances(inst.image_size, pred_boxes=Boxes(torch.cat([inst.pred_boxes.tensor] * 2)),
                      scores=torch.cat([inst.scores] * 2), pred_action_scores=torch.cat([inst.pred_action_scores] * 2))
    ev = AVAEvaluator("evad_test_ava_eval_ties", None, only_processed_keyframes=True)
    ev.reset()
    ev.process(inputs, [{"instances": twice}])
    assert ev.evaluate()["ava"]["person_AP@0.5"] == 100.0


def test_evaluator_matches_a_frame_in_model_box_order(tmp_path):
    """Two predictions of one person: the first in the model's order (score 0.3) takes the box,
    as in EVAD's own evaluation (PySlowFast's code on get_ava_eval_data's box-by-box rows)."""
    _register(tmp_path, "evad_test_ava_eval_box_order")
    box_a = [A[0] * W, A[1] * H, A[2] * W, A[3] * H]
    inst = Instances((H, W), pred_boxes=Boxes(torch.tensor([box_a, box_a])), scores=torch.tensor([0.9, 0.9]),
                     pred_action_scores=torch.tensor([[0.25, 0.0, 0.0, 0.0], [0.75, 0.0, 0.0, 0.0]]))  # column 0: id 4
    inputs = [{"video_id": "vidA", "timestamp": 903, "height": H, "width": W}]  # GT: person A, action 4
    results = {}
    for protocol in ("pyslowfast", "activitynet"):
        ev = AVAEvaluator("evad_test_ava_eval_box_order", None, only_processed_keyframes=True, protocol=protocol)
        ev.reset()
        ev.process(inputs, [{"instances": inst}])
        results[protocol] = ev.evaluate()["ava"]["AP-act4"]
    # PySlowFast: TP at 0.25, FP at 0.75 -> ranked FP, TP: 1/2. ActivityNet matches by score: 1.
    assert results == {"pyslowfast": 50.0, "activitynet": 100.0}
