"""The keep-rate sweep (evad_d2.evaluation.keep_rate_sweep): a tiny model on a tiny generated dataset
at two keep rates with both pruning rules; pooling sweeps over seeds; the written files."""
import json
import os

import pytest
import torch
from detectron2.modeling import build_model

from evad_d2 import get_evad_cfg
from evad_d2.evaluation.keep_rate_sweep import (
    combine_sweeps,
    load_sweep,
    register_dataset_root,
    sweep_keep_rates,
    sweep_table,
    write_sweep,
)
from evad_d2.testing import TINY_CONFIG as TINY

# Every proposal kept (random weights score low), no loader workers.
OPTS = ["MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0", "DATALOADER.NUM_WORKERS", "0"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(get_evad_cfg(TINY))
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def sweep_cfg(weights, *extra):
    """The tiny config with ``weights`` and every proposal kept (``OPTS``), then ``extra``."""
    return get_evad_cfg(TINY, OPTS + ["MODEL.WEIGHTS", weights] + list(extra))


def detections(out, setting):
    with open(os.path.join(out, "eval", setting, "ava_detections.csv")) as f:
        return f.read()


def test_sweep_counts_gflops_on_the_clip_padded_as_the_model_pads_it(generated, weights):
    # The quick-start's MIN_SIZE_TEST 120 is no multiple of 16: the model pads 120 to 128.
    dataset = register_dataset_root(str(generated[0]))
    sweep = sweep_keep_rates(sweep_cfg(weights, "INPUT.MIN_SIZE_TEST", "50"), dataset_name=dataset, keep_rates=[1.0],
                             rules=["attention"], log=lambda s: None)
    assert sweep["gflops_size"] == [8, 64, 64] and sweep["rows"][0]["tokens"] == 64


def test_sweep_evaluates_each_rule_and_rate_once_and_keep_rate_one_once(generated, weights, tmp_path):
    dataset = register_dataset_root(str(generated[0]))
    out = str(tmp_path / "sweep")
    sweep = sweep_keep_rates(sweep_cfg(weights), dataset_name=dataset, keep_rates=[1.0, 0.7], output_dir=out, log=lambda s: None)
    rows = {(r["rule"], r["keep_rate"]): r for r in sweep["rows"]}
    assert list(rows) == [("attention", 1.0), ("attention", 0.7), ("random", 1.0), ("random", 0.7)]
    assert sweep["label"] == "trained: attention" and sweep["dataset"] == dataset and sweep["gflops_size"] == [8, 64, 64]
    # Keep rate 1 prunes nothing: evaluated once (one eval folder), reported for both rules.
    assert sorted(os.listdir(os.path.join(out, "eval"))) == ["attention_rho0.7", "attention_rho1", "random_rho0.7"]
    assert rows["random", 1.0]["metrics"] == rows["attention", 1.0]["metrics"] and not rows["random", 1.0]["pruned"]
    # Tokens at 8x64x64 (hand-computed): 64, and 64 -> ceil(44.8) = 45 -> ceil(31.5) = 32 at 0.7.
    assert [rows[k]["tokens"] for k in rows] == [64, 32, 64, 32]
    assert rows["attention", 0.7]["gflops"] < rows["attention", 1.0]["gflops"]
    assert rows["random", 0.7]["gflops"] < rows["attention", 1.0]["gflops"]
    # Each setting really ran: the detections differ by rate and by rule.
    assert len({detections(out, s) for s in ("attention_rho1", "attention_rho0.7", "random_rho0.7")}) == 3
    for (rule, rho), row in rows.items():
        with open(os.path.join(out, "eval", f"{'attention' if rho == 1.0 else rule}_rho{rho:g}", "ava_metrics.json")) as f:
            assert row["frame_map"] == pytest.approx(100.0 * json.load(f)["mAP"]) == row["metrics"]["frame_mAP@0.5"]
    # The random rule repeats exactly in another sweep (a fresh model, the eval stream reseeded).
    again = str(tmp_path / "again")
    sweep_keep_rates(sweep_cfg(weights), dataset_name=dataset, keep_rates=[0.7], rules=["random"], output_dir=again,
                     log=lambda s: None)
    assert detections(again, "random_rho0.7") == detections(out, "random_rho0.7")

    paths = write_sweep(sweep, str(tmp_path / "files"))
    assert load_sweep(paths["json"]) == json.loads(json.dumps(sweep))
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(paths["md"]) as f:
        assert f.read().splitlines()[0] == "| rule | keep rate | GFLOPs | tokens | frame_mAP@0.5 |"


def test_sweep_refuses_unknown_datasets_missing_weights_and_configs_without_pruning(generated, weights, tmp_path):
    with pytest.raises(ValueError, match="dataset 'no_such_set' is not registered .*--dataset NAME"):
        sweep_keep_rates(sweep_cfg(weights), dataset_name="no_such_set")
    dataset = register_dataset_root(str(generated[0]))
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        sweep_keep_rates(sweep_cfg(""), dataset_name=dataset)
    with pytest.raises(ValueError, match=r"MODEL.WEIGHTS '.*missing.pth' does not exist"):
        sweep_keep_rates(sweep_cfg(str(tmp_path / "missing.pth")), dataset_name=dataset)
    with pytest.raises(ValueError, match="prunes nowhere"):
        sweep_keep_rates(sweep_cfg(weights, "MODEL.EVAD.KEEP_RATES", "[1.0, 1.0, 1.0, 1.0]"), dataset_name=dataset,
                         log=lambda s: None)
    with pytest.raises(ValueError, match="not a folder"):
        register_dataset_root(str(tmp_path / "nothing"))


def fake_sweep(label, maps, dataset="d", rates=(1.0, 0.5)):
    rows = [{"rule": "random", "keep_rate": rho, "pruned": rho < 1, "tokens": 10, "gflops": 2.0 * rho, "frame_map": m}
            for rho, m in zip(rates, maps)]
    return {"kind": "keep_rate_sweep", "label": label, "dataset": dataset, "metric": "frame_mAP@0.5", "rows": rows}


def test_combine_pools_the_seeds_of_each_label():
    runs = [fake_sweep("trained: random", [10.0, 4.0]), fake_sweep("trained: random", [12.0, 6.0]),
            fake_sweep("trained: random", [14.0, 11.0]), fake_sweep("trained: attention", [20.0, 15.0])]
    summary = combine_sweeps(runs, ["a", "b", "c", "d"])
    rows = {(r["label"], r["keep_rate"]): r for r in summary["rows"]}
    r = rows["trained: random", 1.0]
    # mean 12, sample std sqrt(((-2)^2 + 0 + 2^2) / 2) = 2.
    assert (r["n"], r["frame_map_mean"], r["frame_map_std"], r["frame_map_min"], r["frame_map_max"]) == (3, 12.0, 2.0, 10.0, 14.0)
    r = rows["trained: random", 0.5]
    assert r["frame_map_mean"] == 7.0 and r["frame_map_std"] == pytest.approx(3.605551, abs=1e-6)  # sqrt(13)
    assert rows["trained: attention", 0.5]["frame_map_std"] == 0.0 and rows["trained: attention", 0.5]["n"] == 1
    assert summary["runs"] == ["a", "b", "c", "d"] and summary["dataset"] == "d"
    assert "| trained: random | random | 1 | 2.000 | 12.00 ± 2.00 (n=3) |" in sweep_table(summary)
    with pytest.raises(ValueError, match="b .*other rules or keep rates than a"):
        combine_sweeps([fake_sweep("x", [1.0, 2.0]), fake_sweep("x", [1.0], rates=(1.0,))], ["a", "b"])
    with pytest.raises(ValueError, match="different datasets"):
        combine_sweeps([fake_sweep("x", [1.0, 2.0]), fake_sweep("y", [1.0, 2.0], dataset="e")])


def test_load_sweep_names_the_file_and_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: cannot read"):
        load_sweep(str(bad))
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="bad.json: not a keep-rate sweep"):
        load_sweep(str(bad))
    sweep = fake_sweep("x", [1.0, 2.0])
    del sweep["rows"][1]["gflops"]
    bad.write_text(json.dumps(sweep))
    with pytest.raises(ValueError, match=r"bad.json: rows\[1\] has no 'gflops'"):
        load_sweep(str(bad))
