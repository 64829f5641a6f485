"""A keep rate for a latency budget (evad_d2.demo.keep_rate): the grid, the budget, the measured
table (injected timer), the controller's hysteresis and floor, the table file and plot, the tool,
and the controller inside live mode."""
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from evad_d2.demo.keep_rate import (
    KEEP_RATE_TABLE_FORMAT,
    KeepRateController,
    KeepRateTable,
    KeepRateTableError,
    keep_rate_controller,
    keep_rate_grid,
    latency_budget,
    load_keep_rate_table,
    measure_keep_rate_table,
    plot_keep_rate_table,
    save_keep_rate_table,
)
from evad_d2.demo.live import LiveDemo, PacedSource
from evad_d2.demo.live_run import run_live
from evad_d2.demo.sources import open_source
from evad_d2.testing import TINY_CONFIG, coded_frame, run_tool, write_video


def table_of(ms_by_rate):
    rows = [{"keep_rate": r, "gflops": 10 * r, "latency_ms": ms, "clips_per_s": 1000 / ms} for r, ms in ms_by_rate.items()]
    return KeepRateTable(rows, "test machine", (8, 64, 64), {"base_keep_rates": [1.0, 0.7, 1.0, 0.7]})


TABLE = {1.0: 100.0, 0.8: 70.0, 0.6: 50.0, 0.5: 40.0}


def test_keep_rate_grid():
    assert keep_rate_grid(0.5) == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert keep_rate_grid(0.55) == [1.0, 0.9, 0.8, 0.7, 0.6, 0.55]
    assert keep_rate_grid(0.5, step=0.25) == [1.0, 0.75, 0.5]
    assert keep_rate_grid(1.0) == [1.0]
    with pytest.raises(ValueError, match=r"floor must be in \(0, 1\], got 0"):
        keep_rate_grid(0)


def test_latency_budget():
    assert latency_budget(100, None) == pytest.approx(0.1)
    assert latency_budget(None, 4) == pytest.approx(0.25)
    assert latency_budget(100, 20) == pytest.approx(0.05)  # the tighter one
    assert latency_budget() is None
    with pytest.raises(ValueError, match="--latency-ms must be positive"):
        latency_budget(-5)
    with pytest.raises(ValueError, match="--target-fps must be positive"):
        latency_budget(None, 0)


def test_table_chooses_the_highest_keep_rate_that_fits():
    table = table_of(TABLE)
    assert table.keep_rates == [1.0, 0.8, 0.6, 0.5]
    assert table.choose(0.080) == 0.8
    assert table.choose(0.070) == 0.8  # exactly the measured time fits
    assert table.choose(10.0) == 1.0
    assert table.choose(0.030) == 0.5  # nothing fits: the lowest, with a warning
    assert table.choose(0.030, floor=0.6) == 0.6
    with pytest.raises(ValueError, match="no measured keep rate is at or above the floor 0.9"):
        table_of({0.8: 70.0}).choose(1.0, floor=0.9)


def controller(budget_s, floor=0.0):
    applied = []
    c = KeepRateController(table_of(TABLE), budget_s, applied.append, floor=floor, hysteresis=0.1, window=3)
    return c, applied


def feed(c, ms, n=3):
    return [c.observe(ms / 1000) for _ in range(n)]


def test_controller_moves_with_the_measured_time():
    c, applied = controller(0.080)
    assert c.keep_rate == 0.8 and applied == [0.8]
    # Twice slower than measured (140 ms at 0.8): 0.6 would take 2 x 50 = 100 > 80, 0.5 2 x 40 = 80.
    first = feed(c, 140)
    assert first[:2] == [None, None]
    assert first[2] == pytest.approx({"from": 0.8, "to": 0.5, "observed_ms": 140.0, "predicted_ms": 80.0, "budget_ms": 80.0})
    # Quicker (35 ms at 0.5, drift 0.875): 0.8 -> 61.25 would fit 72 (90 % of 80) but was too slow 3
    # keyframes ago (blocked for 10, until keyframe 13); 0.6 -> 43.75 fits.
    change = feed(c, 35)[-1]
    assert (change["from"], change["to"], change["predicted_ms"]) == (0.5, 0.6, pytest.approx(43.75))
    # 30 ms at 0.6 (drift 0.6): 1.0 -> 60 ms fits, once the block ends at keyframe 13 (7 more).
    ups = feed(c, 30, 7)
    assert ups[:-1] == [None] * 6 and (ups[-1]["to"], ups[-1]["predicted_ms"]) == (1.0, pytest.approx(60.0))
    assert c.keep_rate == 1.0 and applied == [0.8, 0.5, 0.6, 1.0] and len(c.changes) == 3


def test_controller_hysteresis_and_median():
    c, applied = controller(0.080)
    # Within budget, and 1.0 would need 75 / 70 x 100 = 107 ms: stays.
    assert feed(c, 75) == [None] * 3
    # Hysteresis: at 56 ms (drift 0.8) 1.0 would take 80 ms, within the budget but not within
    # 90 % of it: stays at 0.8 rather than going up to the edge.
    assert feed(c, 56) == [None] * 3
    # The median of the window decides: one slow keyframe among quick ones changes nothing.
    assert feed(c, 60, 2) + feed(c, 500, 1) == [None] * 3
    assert c.keep_rate == 0.8 and applied == [0.8] and c.changes == []


def test_a_keep_rate_too_slow_is_retried_after_a_doubling_backoff():
    applied = []
    c = KeepRateController(table_of({1.0: 100.0, 0.5: 40.0}), 0.080, applied.append, backoff=10)
    assert c.keep_rate == 0.5
    assert feed(c, 20)[-1]["to"] == 1.0  # keyframe 3: 1.0 would take 50 ms
    assert feed(c, 100)[-1]["to"] == 0.5  # keyframe 6: too slow, 1.0 blocked for 10 (until 16)
    ups = feed(c, 20, 10)  # keyframes 7 .. 16
    assert ups[:-1] == [None] * 9 and ups[-1]["to"] == 1.0
    assert feed(c, 100)[-1]["to"] == 0.5  # keyframe 19: too slow again, blocked for 20 (until 39)
    ups = feed(c, 20, 20)  # keyframes 20 .. 39
    assert ups[:-1] == [None] * 19 and ups[-1]["to"] == 1.0
    assert applied == [0.5, 1.0, 0.5, 1.0, 0.5, 1.0]


def test_controller_never_goes_below_the_floor():
    c, applied = controller(0.080, floor=0.6)
    feed(c, 300)  # 0.6 would take 300 / 70 x 50 = 214 ms: nothing fits, the floor is taken
    assert c.keep_rate == 0.6 and applied == [0.8, 0.6]
    assert feed(c, 300) == [None] * 3  # nothing lower is allowed
    assert c.keep_rate == 0.6


def test_generous_budget_stays_at_one():
    c, applied = controller(1.0)
    for ms in (100, 150, 90, 400, 100, 100):
        assert c.observe(ms / 1000) is None
    assert c.keep_rate == 1.0 and applied == [1.0] and c.changes == []


class FakeClock:
    """Injected timer: each predict_batch of the wrapped predictor costs 100 ms x the backbone's
    smallest keep rate (plus ``load`` times that)."""

    def __init__(self, predictor, load=1.0):
        self.predictor, self.load, self.now = predictor, load, 0.0

    def __call__(self):
        return self.now

    def __getattr__(self, name):  # cfg, model, num_frames, preprocess ... of the predictor
        return getattr(self.predictor, name)

    def predict_batch(self, clips):
        out = self.predictor.predict_batch(clips)
        self.now += self.load * 0.1 * min(self.predictor.model.backbone.keep_rates)
        return out


def test_measured_table_and_the_choice_for_a_budget(predictor):
    fake = FakeClock(predictor)
    before = list(predictor.model.backbone.keep_rates)
    table = measure_keep_rate_table(fake, [1.0, 0.7, 0.4], (40, 56), repeats=2, warmup=1, flops=True, clock=fake)
    assert table.keep_rates == [1.0, 0.7, 0.4]
    assert [r["latency_ms"] for r in table.rows] == pytest.approx([100.0, 70.0, 40.0])
    assert [r["clips_per_s"] for r in table.rows] == pytest.approx([10.0, 1 / 0.07, 25.0])
    g = [r["gflops"] for r in table.rows]
    assert g[0] > g[1] > g[2] > 0  # fewer tokens, fewer FLOPs
    assert table.input_size == (8, 40, 56)
    assert table.meta["base_keep_rates"] == [1.0, 0.7, 1.0, 0.7]
    assert predictor.model.backbone.keep_rates == before  # restored
    assert table.choose(0.075) == 0.7 and table.choose(0.5) == 1.0


def test_controller_for_a_predictor_sets_the_backbone_keep_rates(predictor, tmp_path):
    path = tmp_path / "t.json"
    save_keep_rate_table(table_of(TABLE), str(path))
    c = keep_rate_controller(predictor, 0.060, floor=0.5, table_path=str(path))
    try:
        # 0.6 fits 60 ms: the config's pruning blocks (1 and 3) get 0.6 through set_keep_rates.
        assert c.keep_rate == 0.6
        assert predictor.model.backbone.keep_rates == [1.0, 0.6, 1.0, 0.6]
    finally:
        predictor.model.backbone.set_keep_rates([1.0, 0.7, 1.0, 0.7])


def test_table_file_round_trip_and_schema(tmp_path):
    path = tmp_path / "sub" / "table.json"
    save_keep_rate_table(table_of(TABLE), str(path))
    data = json.loads(path.read_text())
    assert set(data) == {"format", "device", "input_size", "meta", "rows"}
    assert data["format"] == KEEP_RATE_TABLE_FORMAT and data["input_size"] == [8, 64, 64]
    assert [set(r) for r in data["rows"]] == [{"keep_rate", "gflops", "latency_ms", "clips_per_s"}] * 4
    back = load_keep_rate_table(str(path))
    assert back.rows == table_of(TABLE).rows and back.device == "test machine"
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]


def test_table_file_errors_name_file_and_key(tmp_path):
    with pytest.raises(KeepRateTableError, match="missing.json: cannot read"):
        load_keep_rate_table(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(KeepRateTableError, match="bad.json: 'format' is 'other'.*calibrate_keep_rate.py"):
        load_keep_rate_table(str(bad))
    data = table_of(TABLE).to_json()
    data["rows"][1]["latency_ms"] = "fast"
    bad.write_text(json.dumps(data))
    with pytest.raises(KeepRateTableError, match=r"bad.json: rows\[1\].latency_ms must be a positive number, got 'fast'"):
        load_keep_rate_table(str(bad))
    data["rows"][1]["latency_ms"], data["rows"][0]["keep_rate"] = 5.0, 1.5
    bad.write_text(json.dumps(data))
    with pytest.raises(KeepRateTableError, match=r"rows\[0\].keep_rate = 1.5 is outside"):
        load_keep_rate_table(str(bad))


def test_plot_is_a_png(tmp_path):
    path = tmp_path / "plot.png"
    plot_keep_rate_table(table_of(TABLE), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(path).size == (600, 400)  # 6 x 4 inches at 100 dpi


class LoadedPredictor:
    """LiveDemo's predictor interface whose injected model time is ``load x table(keep rate)``;
    the load is 2.5 while the clip's newest frame index (its pixel value) is in [60, 120)."""

    num_frames, keyframe_index, sampling_rate, frame_rate = 4, 2, 1, 50.0

    def __init__(self, table):
        self.table, self.keep_rate, self.now = table, 1.0, 0.0

    def predict_batch(self, clips):
        index = int(clips[0][-1, 0, 0, 0])
        load = 2.5 if 60 <= index < 120 else 1.0
        self.now += load * self.table.latency_s(self.keep_rate)
        time.sleep(0.005)
        return [[] for _ in clips]


class Frames:
    def __init__(self, n, fps):
        self.n, self.frame_rate, self.name = n, fps, "frames"

    def __iter__(self):
        for i in range(self.n):
            yield np.full((4, 4, 3), i, np.uint8), i / self.frame_rate, time.time()

    def close(self):
        pass


def test_live_mode_keep_rate_follows_the_load():
    table = table_of({1.0: 40.0, 0.8: 30.0, 0.6: 20.0, 0.5: 15.0})
    model = LoadedPredictor(table)
    # 52 ms budget: 1.0 (40 ms) at start; at load 2.5, 1.0 takes 100 ms, 0.8 75, 0.6 50 -> 0.6; when
    # the load is gone, 0.6 takes 20 ms and 1.0 would take 40 <= 46.8 ms (90 %) -> back to 1.0.
    c = KeepRateController(table, 0.052, lambda rho: setattr(model, "keep_rate", rho), floor=0.5)
    records = []
    summary = LiveDemo(model, keyframe_interval=0.04, controller=c, clock=lambda: model.now).run(
        PacedSource(Frames(180, 50.0)), on_keyframe=lambda r, a: records.append(r), poll_s=0.05
    )
    assert [(ch["from"], ch["to"]) for ch in summary["keep_rate_changes"]] == [(1.0, 0.6), (0.6, 1.0)]
    assert {r["keep_rate"] for r in records if r["frame_index"] < 60} == {1.0}
    assert 0.6 in {r["keep_rate"] for r in records if 60 <= r["frame_index"] < 120}
    assert records[-1]["keep_rate"] == summary["keep_rate"] == 1.0
    assert records[0]["model_ms"] == pytest.approx(40.0)


def test_run_live_file_with_a_generous_budget_stays_at_one(predictor, tmp_path):
    video, table = tmp_path / "in.mp4", tmp_path / "table.json"
    write_video(video, [coded_frame(i) for i in range(30)], rate=30)  # 1 s
    save_keep_rate_table(table_of(TABLE), str(table))
    records, rates_seen = [], []

    class Records:
        def add(self, record):
            records.append(record)
            rates_seen.append(list(predictor.model.backbone.keep_rates))

    start = time.perf_counter()
    try:
        summary = run_live(
            predictor, open_source(str(video)), None, records=Records(), keyframe_interval=0.1, budget_s=10.0,
            keep_rate_table=str(table),
        )
    finally:
        predictor.model.backbone.set_keep_rates([1.0, 0.7, 1.0, 0.7])
    # A file is played at its frame rate (not live: PacedSource): the 30 frames take about 1 s.
    assert time.perf_counter() - start >= 0.9
    assert summary["frames_decoded"] == 30 and summary["processed_keyframes"] == len(records) >= 2
    assert {r["keep_rate"] for r in records} == {1.0} and summary["keep_rate_changes"] == []
    assert rates_seen[0] == [1.0, 1.0, 1.0, 1.0]  # the pruning blocks got 1.0 through set_keep_rates
    assert summary["keep_rate_table"]["rows"] == table_of(TABLE).to_json()["rows"]


def test_run_live_measures_on_the_streams_frame_size(predictor, tmp_path):
    video = tmp_path / "in.mp4"
    write_video(video, [coded_frame(i, width=80, height=40) for i in range(12)], rate=30)
    try:
        summary = run_live(predictor, open_source(str(video)), None, keyframe_interval=0.2, budget_s=10.0,
                           min_keep_rate=0.8)
    finally:
        predictor.model.backbone.set_keep_rates([1.0, 0.7, 1.0, 0.7])
    table = summary["keep_rate_table"]
    assert table["input_size"] == [8, 40, 80]  # the first frame's size, not a square
    assert [r["keep_rate"] for r in table["rows"]] == [1.0, 0.9, 0.8]
    assert summary["keep_rate"] == 1.0 and summary["frames_decoded"] == 12


@pytest.mark.slow
def test_calibrate_tool_writes_the_table_and_the_plot(tmp_path):
    args = [
        "--config-file", TINY_CONFIG, "--device", "cpu", "--output-dir", tmp_path, "--min-keep-rate", "0.6",
        "--step", "0.2", "--repeats", "1", "--warmup", "0", "--frame-size", "48", "64",
    ]
    done = run_tool("tools/calibrate_keep_rate.py", *args, timeout=300)
    assert done.returncode == 0, done.stderr
    table = load_keep_rate_table(str(tmp_path / "keep_rate_table.json"))
    assert table.keep_rates == [1.0, 0.8, 0.6] and table.input_size == (8, 48, 64)
    assert all(r["gflops"] > 0 and r["latency_ms"] > 0 for r in table.rows)
    assert table.meta["config_file"] == TINY_CONFIG
    assert Image.open(tmp_path / "keep_rate_table.png").format == "PNG"
    assert "keep_rate" in done.stdout
    bad = run_tool("tools/calibrate_keep_rate.py", *args, "--min-keep-rate", "0", timeout=300)
    assert bad.returncode == 2 and "floor must be in (0, 1]" in bad.stderr
