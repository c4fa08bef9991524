"""The composition benchmark (bench/bench_forward.py): the fast check runs its machinery on the tiny preset; the
slow one runs the "bench" configuration (released widths, 2 layers per transformer) briefly."""

import pytest

COMPONENTS = {"SigLIP", "SAM", "LLM", "pixel decoder", "masked decoder"}


def _check(result, llm_tokens):
    medians = result["medians_s"]
    assert {k.removeprefix("component: ") for k in medians if k.startswith("component: ")} == COMPONENTS
    assert "glue: region sampling" in medians and "glue: connector" in medians
    assert result["llm_sequence_length"] == llm_tokens
    assert result["components_sum_s"] == pytest.approx(sum(v for k, v in medians.items() if k.startswith("component")))
    assert result["ratio"] == pytest.approx(medians["model forward"] / result["components_sum_s"])
    assert all(v > 0 for v in medians.values())


def test_bench_machinery_on_the_tiny_preset(bench_script):
    module = bench_script("bench_forward")
    result = module.run_benchmark(preset="tiny", runs=1, clock="cpu")
    # 138 prompt ids; <image> becomes 16 SigLIP + 16 SAM tokens, <region> one pooled token.
    _check(result, llm_tokens=137 + 32)
    assert "ratio forward / sum(components)" in module.format_report(result)


@pytest.mark.slow
def test_bench_configuration_briefly(bench_script):
    module = bench_script("bench_forward")
    result = module.run_benchmark(preset="bench", runs=1, clock="cpu")
    _check(result, llm_tokens=137 + 729 + 256)
    # The forward does what its parts do and not much more: the parts explain it to within a quarter.
    assert 0.95 < result["ratio"] < 1.6
    explained = result["components_sum_s"] + result["glue_sum_s"]
    assert abs(result["medians_s"]["model forward"] - explained) < 0.25 * result["medians_s"]["model forward"]
