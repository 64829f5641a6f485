"""evad_d2.benchmark.analysis: the comparison with the paper's GFLOPs."""
import pytest

from evad_d2.benchmark.analysis import PAPER_GFLOPS_VIT_B_224, paper_comparison


def test_paper_comparison_only_for_vit_b_at_16x224x224_and_the_rates_counted():
    counted = {"1.0": {"total": 223.8 * 1.1}, "0.7": {"total": 134.2}, "0.55": {"total": 1.0}}
    rows = paper_comparison(counted, (16, 224, 224), 768)
    assert [r["keep_rate"] for r in rows] == [1.0, 0.7]
    assert rows[0]["paper"] == PAPER_GFLOPS_VIT_B_224[1.0] and rows[0]["ratio"] == pytest.approx(1.1)
    assert rows[1]["ratio"] == pytest.approx(1.0)
    assert paper_comparison(counted, (16, 224, 298), 768) is None
    assert paper_comparison(counted, (16, 224, 224), 384) is None
    assert paper_comparison({}, (16, 224, 224), 768) is None
