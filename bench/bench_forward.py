"""How much does X-SAM's glue cost? One forward of the model against the sum of its components' own forwards.

The "bench" configuration has the released hidden sizes (SigLIP 1152, SAM 1024, Phi-3 3072 with the 32014-row
vocabulary, decoder 256) with 2 layers in every transformer (SigLIP, SAM, Phi-3, the deformable pixel-decoder
encoder, the masked-attention decoder), a 512 px SAM canvas and the 384 px SigLIP input, so it runs on a CPU. The
prompt is a generic-segmentation request with 20 categories, one of them a visual prompt (`<p><region></p>`), and
one `<SEG>`: every part of the forward runs.

On the same inputs, interleaved run by run in one process, the script times:
* the model's forward (`XSamForSegmentation.forward`);
* each component's own forward: SigLIP and SAM (with `output_hidden_states=True`, which X-SAM needs too), the LLM
  on the already merged `inputs_embeds`, the pixel decoder on the connector's pyramid, the stock masked-attention
  decoder (no `<SEG>` injection) on the pixel decoder's outputs;
* each piece of glue on its own: placeholder merging, the vision / seg / LLM projectors (with the pixel shuffle),
  the connector, region sampling, instance gathering + class head.
It prints medians, the ratio model / sum(components) (target <= 1.10), and where the rest goes.

Measured (2-core Intel Xeon CPU, no GPU, torch 2.13 CPU, fp32, 2 threads, `--runs 10 --clock cpu` because other
jobs shared the machine): forward 14.7 s, components 13.7 s, ratio 1.073; projectors + connector 6.7 %, merging,
region sampling, instance gathering and class head 1.0 % together; table in `bench/README.md`. The ratio is not
1.0 because the projectors and the connector are X-SAM's own layers, whose cost stays while the transformers here
have 2 layers.

On a GPU, the released-size model (`--device cuda --dtype bfloat16 --preset x-sam-phi3-mini`) is built on the meta
device and materialised on the GPU (random weights), then also timed per task (generic segmentation, referring,
GCG generation of 64 tokens + masks) with the peak GPU memory of each. That path has NOT been run: no GPU was lent
to this task.

Usage:
    python bench/bench_forward.py                       # bench config, CPU, fp32, 10 runs
    python bench/bench_forward.py --runs 3              # quicker
    python bench/bench_forward.py --device cuda --dtype bfloat16 --preset x-sam-phi3-mini
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from xsam_hf import XSamConfig, XSamForSegmentation
from xsam_hf.modeling.projection import pixel_shuffle
from xsam_hf.presets import get_preset

TWO_LAYERS = {
    "vision_config": {"num_hidden_layers": 2},
    # Two SAM blocks, the second with global attention; the connector reads block outputs 1, 2, 2 (hidden state 0
    # is the patch embedding), the LLM path block 1's output (hidden_states[-2]).
    "segmentation_encoder_config": {"num_hidden_layers": 2, "global_attn_indexes": [1], "image_size": 512},
    "text_config": {"num_hidden_layers": 2},
    # encoder_layers: deformable pixel-decoder layers; decoder_layers = masked-attention layers + 1 (upstream's count).
    "decoder_config": {"encoder_layers": 2, "decoder_layers": 3},
}
TOP_LEVEL = {"bench": {"connector_feature_layers": [1, 2, 2]}}
IMAGE_TOKEN, REGION_TOKEN = -200, -300


def bench_config(preset: str) -> XSamConfig:
    """"bench": the released sizes with 2 layers per transformer and a 512 px canvas; else a preset of xsam_hf."""
    if preset != "bench":
        return XSamConfig.from_preset(preset)
    kwargs = get_preset("x-sam-phi3-mini")["config"]
    for key, overrides in TWO_LAYERS.items():
        kwargs[key] = {**kwargs[key], **overrides}
    return XSamConfig(**kwargs, **TOP_LEVEL["bench"])


def build_model(config: XSamConfig, device: torch.device, dtype: torch.dtype) -> XSamForSegmentation:
    """Random weights. Built on the meta device and materialised where it runs, so a released-size model never
    exists twice in host memory (and is not initialised on the CPU first)."""
    with torch.device("meta"):
        model = XSamForSegmentation(config)
    model = model.to(dtype).to_empty(device=device)
    # Meta construction skipped initialisation; this initialises everything (non-persistent buffers such as the
    # rotary frequencies included) on the target device.
    model.initialize_weights()
    model.set_attn_implementation("sdpa")
    return model.eval()


def _text_ids(config: XSamConfig, generator: torch.Generator, count: int) -> list[int]:
    """Ordinary text ids: below the special ones (<SEG>, <p>, </p>, EOS) of any vocabulary."""
    reserved = [config.seg_token_id, config.phrase_start_token_id, config.phrase_end_token_id,
                config.text_config.eos_token_id or 32000]
    high = min(config.text_config.vocab_size, 32000, *reserved)
    return torch.randint(100, high, (count,), generator=generator).tolist()


def make_inputs(config: XSamConfig, device: torch.device, dtype: torch.dtype, num_categories: int = 20,
                num_regions: int = 1, seed: int = 0, with_answer: bool = True) -> dict[str, Any]:
    """A generic-segmentation prompt with `num_categories` phrases (the first `num_regions` are visual prompts) and
    a teacher-forced answer holding the `<SEG>` (without it: a prompt to generate from)."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: _text_ids(config, g, n)  # noqa: E731
    ids = [config.text_config.bos_token_id] + text(4) + [IMAGE_TOKEN] + text(20)
    for k in range(num_categories):
        inner = [REGION_TOKEN] if k < num_regions else text(2)
        ids += [config.phrase_start_token_id, *inner, config.phrase_end_token_id] + text(1)
    ids += text(10) + ([config.seg_token_id] + text(2) if with_answer else [])
    vision_size = config.vision_config.image_size
    canvas = config.segmentation_encoder_config.image_size
    region = torch.zeros(num_regions, canvas, canvas, dtype=torch.bool)
    for r in range(num_regions):
        region[r, canvas // 4 : canvas // 2, canvas // 3 : 2 * canvas // 3] = True
    return {
        "input_ids": torch.tensor([ids], device=device),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
        "pixel_values": torch.randn(1, 3, vision_size, vision_size, generator=g).to(device, dtype),
        "extra_pixel_values": torch.randn(1, 3, canvas, canvas, generator=g).to(device, dtype),
        "region_masks": [region.to(device)] if num_regions else None,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {
    # Wall-clock time: what a user waits for.
    "wall": time.perf_counter,
    # CPU time of this process (all threads): much less sensitive to other jobs on a shared machine.
    "cpu": time.process_time,
}


def _timed(fn: Callable[[], Any], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    _synchronize(device)
    start = clock()
    fn()
    _synchronize(device)
    return clock() - start


def benchmark_calls(model: XSamForSegmentation, inputs: dict[str, Any]) -> tuple[dict, dict, Callable, int]:
    """The component calls and glue calls, each on precomputed inputs identical to what the model feeds them, the
    full forward, and the LLM's (expanded) sequence length."""
    config = model.config
    with torch.no_grad():
        vision_out = model.vision_tower(pixel_values=inputs["pixel_values"], output_hidden_states=True)
        sam_out = model.segmentation_encoder(pixel_values=inputs["extra_pixel_values"], output_hidden_states=True)
        features = model.get_image_features(inputs["pixel_values"], inputs["extra_pixel_values"])
        regions = model._region_tokens(features, inputs["region_masks"], None, None) if inputs["region_masks"] else None
        merged = model._merge_inputs(inputs["input_ids"], inputs["attention_mask"], None, features, regions)
        captured = {}
        hook = model.language_model.get_decoder().register_forward_hook(
            lambda module, args, output: captured.__setitem__("hidden", output[0])
        )
        model.language_model(inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask)
        hook.remove()
        pixel_out = model.segmentation_decoder.pixel_decoder(list(features.feature_pyramid), return_dict=True)
        instances = model._gather_instances(
            model.llm_projector(captured["hidden"]), merged.condition_ids, merged.seg_ids, False
        )
        decoded = model.segmentation_decoder.transformer_module(
            pixel_out.multi_scale_features, pixel_out.mask_features, seg_embeddings=instances.seg_embeddings
        )
    sam_states = sam_out.hidden_states
    decoder = model.segmentation_decoder

    components = {
        "SigLIP": lambda: model.vision_tower(pixel_values=inputs["pixel_values"], output_hidden_states=True),
        "SAM": lambda: model.segmentation_encoder(pixel_values=inputs["extra_pixel_values"], output_hidden_states=True),
        "LLM": lambda: model.language_model(inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask),
        "pixel decoder": lambda: decoder.pixel_decoder(list(features.feature_pyramid), return_dict=True),
        # The stock upstream forward (no <SEG> hook): what Mask2Former itself costs.
        "masked decoder": lambda: decoder.transformer_module(pixel_out.multi_scale_features, pixel_out.mask_features),
    }
    glue = {
        "merging (<image>/<region> expansion)": lambda: model._merge_inputs(
            inputs["input_ids"], inputs["attention_mask"], None, features, regions
        ),
        "vision projector": lambda: model.vision_projector(vision_out.hidden_states[config.vision_feature_layer]),
        "pixel shuffle + seg projector": lambda: model.seg_projector(
            pixel_shuffle(
                sam_states[config.segmentation_feature_layer], config.segmentation_downsample_ratio
            ).flatten(1, 2)
        ),
        "connector": lambda: model.connector([sam_states[i] for i in config.connector_feature_layers]),
        "llm projector + instance gathering": lambda: model._gather_instances(
            model.llm_projector(captured["hidden"]), merged.condition_ids, merged.seg_ids, False
        ),
        "class head (all decoder layers)": lambda: [
            model.class_head(state.transpose(0, 1), instances.conditions, instances.condition_mask)
            for state in decoded.intermediate_hidden_states
        ],
    }
    if inputs["region_masks"]:
        glue["region sampling"] = lambda: model._region_tokens(features, inputs["region_masks"], None, None)
    full = lambda: model(**inputs)  # noqa: E731
    return components, glue, full, merged.inputs_embeds.shape[1]


def run_benchmark(preset: str = "bench", runs: int = 10, device: str = "cpu", dtype: str = "float32",
                  threads: int | None = None, seed: int = 0, clock: str = "wall") -> dict[str, Any]:
    """Build the model, time everything interleaved `runs` times after one warm-up, return the medians (seconds)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    target, torch_dtype = torch.device(device), getattr(torch, dtype)
    config = bench_config(preset)
    model = build_model(config, target, torch_dtype)
    inputs = make_inputs(config, target, torch_dtype, seed=seed)
    components, glue, full, sequence_length = benchmark_calls(model, inputs)
    calls = {"model forward": full, **{f"component: {k}": v for k, v in components.items()},
             **{f"glue: {k}": v for k, v in glue.items()}}
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for name, fn in calls.items():  # warm-up (allocator, kernels, lazy init)
            fn()
        for _ in range(runs):
            for name, fn in calls.items():
                times[name].append(_timed(fn, target, CLOCKS[clock]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    component_sum = sum(v for k, v in medians.items() if k.startswith("component: "))
    glue_sum = sum(v for k, v in medians.items() if k.startswith("glue: "))
    result = {
        "preset": preset, "device": device, "dtype": dtype, "runs": runs, "threads": torch.get_num_threads(),
        "clock": clock,
        "llm_sequence_length": sequence_length,
        "medians_s": medians,
        "components_sum_s": component_sum,
        "glue_sum_s": glue_sum,
        "ratio": medians["model forward"] / component_sum,
        "unexplained_s": medians["model forward"] - component_sum - glue_sum,
    }
    if target.type == "cuda":
        result["tasks"] = _gpu_tasks(model, config, target, torch_dtype, runs)
    return result


class _ForcedAnswer(LogitsProcessor):
    """Make generation emit a fixed answer, one token per step."""

    def __init__(self, answer: list[int]):
        self.answer = answer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        token = self.answer[min(input_ids.shape[1], len(self.answer) - 1)]
        forced = torch.full_like(scores, float("-inf"))
        forced[:, token] = 0.0
        return forced


def _grounded_answer(config: XSamConfig, length: int, phrases: int = 5) -> list[int]:
    """`length` ids shaped like a GCG answer: `<p> w w </p> w` phrases, filler words, then `<SEG>` and 2 words."""
    g = torch.Generator().manual_seed(1)
    answer = []
    for _ in range(phrases):
        answer += [config.phrase_start_token_id, *_text_ids(config, g, 2), config.phrase_end_token_id]
        answer += _text_ids(config, g, 1)
    answer += _text_ids(config, g, length - len(answer) - 3) + [config.seg_token_id] + _text_ids(config, g, 2)
    return answer


def _gpu_tasks(model: XSamForSegmentation, config: XSamConfig, device: torch.device, dtype: torch.dtype,
               runs: int) -> dict[str, dict[str, float]]:
    """Latency (median) and peak memory per task on a GPU. UNTESTED: no GPU was lent when this was written."""
    tasks = {
        "generic segmentation (20 classes)": make_inputs(config, device, dtype, num_categories=20, num_regions=0),
        "referring (1 phrase)": make_inputs(config, device, dtype, num_categories=1, num_regions=0),
        "interactive (1 visual prompt)": make_inputs(config, device, dtype, num_categories=1, num_regions=1),
        "gcg (64 generated tokens + masks)": make_inputs(config, device, dtype, 0, 0, with_answer=False),
    }
    results = {}
    for name, inputs in tasks.items():
        if name.startswith("gcg"):
            # Random weights would generate anything: force a 64-token grounded caption (5 phrases, one <SEG>) so
            # every run generates the same length and ends with the segmentation forward.
            prompt = {k: v for k, v in inputs.items() if k != "region_masks"}
            forced = LogitsProcessorList([_ForcedAnswer(_grounded_answer(config, length=64))])
            fn = lambda p=prompt, f=forced: model.generate(  # noqa: E731
                **p, max_new_tokens=64, logits_processor=f, stop_token_ids=[config.text_config.eos_token_id]
            )
        else:
            fn = lambda i=inputs: model(**i)  # noqa: E731
        with torch.no_grad():
            fn()
            torch.cuda.reset_peak_memory_stats(device)
            latencies = [_timed(fn, device) for _ in range(runs)]
        results[name] = {
            "median_s": statistics.median(latencies),
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        }
    return results


def format_report(result: dict[str, Any]) -> str:
    medians, full = result["medians_s"], result["medians_s"]["model forward"]
    lines = [
        f"X-SAM forward vs components: preset={result['preset']} device={result['device']} dtype={result['dtype']} "
        f"threads={result['threads']} runs={result['runs']} clock={result['clock']} "
        f"LLM tokens={result['llm_sequence_length']} (medians)",
        f"{'':42s}{'ms':>10s}{'% of forward':>14s}",
    ]
    row = lambda name, value: f"{name:42s}{value * 1e3:10.1f}{100 * value / full:13.1f}%"  # noqa: E731
    lines += [row(name, value) for name, value in medians.items()]
    lines += [
        row("sum of components", result["components_sum_s"]),
        row("sum of glue parts", result["glue_sum_s"]),
        row("unexplained (hooks, <SEG> injection, noise)", result["unexplained_s"]),
        f"ratio forward / sum(components) = {result['ratio']:.3f} (target <= 1.10)",
    ]
    for name, task in result.get("tasks", {}).items():
        lines.append(f"task {name}: {task['median_s'] * 1e3:.1f} ms, peak {task['peak_memory_gib']:.2f} GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="bench", help='"bench" (default) or an xsam_hf preset name')
    parser.add_argument("--runs", type=int, default=10, help="timed runs per call (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS), help="wall-clock or process CPU time")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures host CPU time: use it with --device cpu")
    result = run_benchmark(args.preset, args.runs, args.device, args.dtype, args.threads, clock=args.clock)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
