"""``omni bench``: the benchmarks run end to end at tiny sizes on the CPU, and count FLOPs right."""

from __future__ import annotations

import json
import types

import pytest
import torch

from omni import cli
from omni.bench import ttft

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def one_thread():
    """Tiny ops on a shared 2-core machine: a second thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _positive(row: dict, key: str) -> float:
    value = row[key]
    assert isinstance(value, (int, float)) and value > 0, (row["case"], key, value)
    return value


def test_ttft_tiny_times_ours_and_transformers(tmp_path, capsys, one_thread):
    import transformers

    out = tmp_path / "ttft.json"
    argv = "bench ttft --tiny --device cpu --repeats 1 --video-2min --json".split() + [str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ours TTFT s" in printed and "tf/ours" in printed and "ours/floor" in printed
    assert "ours/timed" in printed
    assert "our encoders' attention: torch SDPA" in printed  # FlashAttention 4 serves GPUs only

    result = json.loads(out.read_text())
    assert result["meta"]["transformers"] == transformers.__version__
    assert result["meta"]["order"] == "sequential"
    assert result["meta"]["torch"] == torch.__version__ and result["meta"]["date"]
    rows = {row["case"]: row for row in result["rows"]}
    assert list(rows) == [
        "image 8x12 = 96 patches",
        "video 8 frames 16:9, EVS 0",
        "video 8 frames 16:9, EVS 0.5",
        "video 8 frames 16:9, EVS 0.75",
        "video 16 frames 16:9 (2 min at 2 fps), ours only",
        "audio 8 s (2 clips of 4 s)",
    ]
    for row in rows.values():
        assert not [k for k in row if k.endswith("_error")], row
        for key in (
            "ours_ttft_s",
            "lm_tokens",
            "flops",
            "floor_s",
            "ours_over_floor",
            "timed_floor_s",
            "ours_over_timed_floor",
        ):
            _positive(row, key)
        if "ours only" in row["case"]:
            assert not [k for k in row if k.startswith("transformers")]
            continue
        for who in ("ours", "transformers"):
            for key in ("ttft_s", "encode_s", "prefill_s"):
                _positive(row, f"{who}_{key}")
            assert len(row[f"{who}_times_s"]) == 1
        _positive(row, "transformers_over_ours")

    # 16 text tokens around the placeholders: 96 patches / 4; 4 tubelets of 2 x 4; 8 s of audio
    assert rows["image 8x12 = 96 patches"]["lm_tokens"] == 16 + 24
    videos = [rows[f"video 8 frames 16:9, EVS {rate}"]["lm_tokens"] for rate in ("0", "0.5", "0.75")]
    assert videos[0] == 16 + 4 * 8 and videos[0] > videos[1] > videos[2] >= 16 + 8
    assert rows["video 16 frames 16:9 (2 min at 2 fps), ours only"]["lm_tokens"] == 16 + 8 * 8
    assert rows["audio 8 s (2 clips of 4 s)"]["lm_tokens"] == 16 + 101
    assert rows["image 8x12 = 96 patches"]["transformers_path"] == "forward"
    assert rows["audio 8 s (2 clips of 4 s)"]["transformers_path"] == "forward"
    for rate in ("0", "0.5", "0.75"):  # 5.23's video forward raises; its blocks stand in, labelled
        row = rows[f"video 8 frames 16:9, EVS {rate}"]
        assert row["transformers_path"] in ("forward", "building blocks")
        if row["transformers_path"] != "forward":
            assert row["transformers_note"].startswith("forward: ")
            assert "transformers timed as its building blocks" in printed


def test_full_depth_runs_every_layer_in_both(tmp_path, one_thread):
    out = tmp_path / "full.json"
    argv = ["bench", "ttft", "--tiny", "--full-depth", "--device", "cpu", "--cases", "image"]
    assert cli.main([*argv, "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["num_layers"] == 52 and result["meta"]["transformers"]
    (row,) = result["rows"]
    assert _positive(row, "ours_ttft_s") and _positive(row, "transformers_ttft_s")


def test_reference_holds_our_weights_mostly_without_copies(one_thread):
    """transformers' model gets every weight of ours under its own names; all but the experts it stacks
    are our tensors themselves (so the full depth of both fits one card)."""
    from omni.checkpoint import released_tensors

    ours = ttft.build_ours(ttft.omni_config("MEM*EMEM", True), torch.device("cpu"), torch.float32)
    reference = ttft.load_reference(ours, torch.device("cpu"), torch.float32)
    theirs = reference.state_dict()
    released = released_tensors(ours)
    assert sum(t.numel() for t in theirs.values()) >= sum(t.numel() for t in released.values())
    ours_storage = {t.untyped_storage().data_ptr() for t in ours.state_dict().values()}
    copied = [k for k, t in theirs.items() if t.untyped_storage().data_ptr() not in ours_storage]
    # copies: the stacked experts, and a small index buffer transformers' RADIO builds itself
    assert copied and all(".experts." in k or k == "vision_model.summary_idxs" for k in copied), copied
    assert torch.equal(theirs["multi_modal_projector.linear_1.weight"], released["mlp1.1.weight"])
    up = theirs["language_model.model.layers.1.mixer.experts.up_proj"]
    assert torch.equal(up[3], released["language_model.backbone.layers.1.mixer.experts.3.up_proj.weight"])


def test_memory_limit_needs_a_gpu_and_a_positive_size(capsys):
    argv = ["bench", "ttft", "--tiny", "--device", "cpu", "--cases", "audio", "--skip-reference"]
    assert cli.main([*argv, "--memory-limit-gib", "0"]) != 0
    assert "--memory-limit-gib must be positive" in capsys.readouterr().err
    assert cli.main([*argv, "--memory-limit-gib", "78"]) != 0
    assert "needs a CUDA device" in capsys.readouterr().err


def test_memory_limit_hands_torch_a_device_index(monkeypatch):
    """torch's per-process fraction refuses a bare "cuda" device (it wants an index): an H200 run of
    `--memory-limit-gib 78` failed so; the fraction is the limit over the card's memory."""
    calls = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(total_memory=140 * 2**30)
    )
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda fraction, index: calls.append((fraction, index))
    )
    ttft.limit_memory(torch.device("cuda"), 70)
    ttft.limit_memory(torch.device("cuda:1"), 35)
    assert calls == [(0.5, 0), (0.25, 1)]


def test_bench_all_writes_both_results(tmp_path, one_thread):
    out = tmp_path / "all.json"
    argv = ["bench", "all", "--tiny", "--device", "cpu", "--skip-reference", "--prompt", "8", "--new", "3"]
    argv += ["--batches", "1", "--cases", "audio", "--repeats", "1", "--json", str(out)]
    assert cli.main(argv) == 0
    result = json.loads(out.read_text())
    assert _positive(result["decode"]["rows"][0], "ours_graphs_tok_s")
    assert _positive(result["ttft"]["rows"][0], "ours_ttft_s")


def test_bad_options_are_input_errors(capsys):
    assert cli.main(["bench", "ttft", "--cases", "image,pictures", "--device", "cpu"]) == 2
    assert "pictures" in capsys.readouterr().err
    assert cli.main(["bench", "ttft", "--evs", "0,1", "--device", "cpu"]) == 2
    assert cli.main(["bench", "ttft", "--layers", "MEX", "--device", "cpu"]) == 2
    assert "X" in capsys.readouterr().err


def test_timed_floor_runs_the_flops_as_whole_matmuls_and_scales_back(monkeypatch):
    """The timed floor issues ceil(FLOPs / one matmul's) matmuls per timed stream, as many streams as
    the first token is timed (plus its warm-up), and scales the median back to the FLOPs asked for."""
    from omni.bench import common

    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(common.torch, "mm", lambda *a, **k: calls.append(1) or real_mm(*a, **k))
    monkeypatch.setattr(common, "timed", lambda fn, device: (fn(), 3.0)[1])
    per_matmul = 2 * 16**3
    seconds = common.matmul_seconds(2.5 * per_matmul, torch.device("cpu"), repeats=4, size=16)
    assert len(calls) == 3 * (1 + 4)  # three matmuls a stream: one warm-up, four timed
    assert seconds == pytest.approx(3.0 * 2.5 / 3)
    calls.clear()
    assert common.matmul_seconds(1.0, torch.device("cpu"), repeats=1, size=16) == pytest.approx(
        3.0 / per_matmul
    )
    assert len(calls) == 2  # at least one matmul a stream


def test_alternating_rounds_reverse_the_order_and_keep_each_sides_times(monkeypatch):
    """Both sides warm up, then take turns (a b, b a, a b, ...), so neither always runs after the other;
    each side's median and its timed runs come back in its own measurement."""
    from omni.bench import common

    calls, clock = [], {"a": iter([5.0, 1.0, 3.0]), "b": iter([2.0, 6.0, 4.0])}
    monkeypatch.setattr(common, "timed", lambda fn, device: next(clock[fn()]))
    fns = [lambda: calls.append("a") or "a", lambda: calls.append("b") or "b"]
    first, second = common.measure_alternating(fns, torch.device("cpu"), repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rounds reversed in turn
    assert (first.times, first.seconds) == ([5.0, 1.0, 3.0], 3.0)
    assert (second.times, second.seconds) == ([2.0, 6.0, 4.0], 4.0)


def test_alternating_times_the_path_that_runs_and_the_side_that_can(monkeypatch):
    """A side's failing path is skipped for the next (noted), a side with none that runs gets its error,
    and the other side is still timed; all in alternating rounds."""
    monkeypatch.setattr(ttft, "measure_alternating", lambda fns, device, repeats: [
        ttft.Measurement(0.5 * (i + 1), 0, 0, [0.5 * (i + 1)] * repeats) for i, _ in enumerate(fns)
    ])  # fmt: skip

    def broken():
        raise TypeError("cannot cat")

    row = {}
    sides = [("ours", [("forward", lambda: 1)], 0),
             ("transformers", [("forward", broken), ("building blocks", lambda: 2)], 0)]  # fmt: skip
    ttft.time_alternating(row, sides, torch.device("cpu"), repeats=2)
    assert row["ours_ttft_s"] == 0.5 and row["ours_times_s"] == [0.5, 0.5]
    assert row["transformers_ttft_s"] == 1.0 and row["transformers_path"] == "building blocks"
    assert row["transformers_note"] == "forward: TypeError: cannot cat"

    row = {}
    sides = [("ours", [("forward", lambda: 1)], 0), ("transformers", [("forward", broken)], 0)]
    ttft.time_alternating(row, sides, torch.device("cpu"), repeats=2)
    assert row["ours_ttft_s"] == 0.5 and "transformers_ttft_s" not in row
    assert row["transformers_error"] == "forward: TypeError: cannot cat"


def test_alternate_order_times_both_sides_in_turns(tmp_path, one_thread):
    out = tmp_path / "alt.json"
    argv = ["bench", "ttft", "--tiny", "--device", "cpu", "--cases", "audio", "--order", "alternate"]
    assert cli.main([*argv, "--repeats", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["meta"]["order"] == "alternate"
    assert len(row["ours_times_s"]) == len(row["transformers_times_s"]) == 2
    _positive(row, "transformers_over_ours")


def test_vit_and_projector_flops_by_hand():
    from encoders import RadioConfig

    config = RadioConfig(hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16,
                         patch_size=2, max_img_size=8, num_cls_tokens=1, num_registers=1,
                         video_temporal_patch_size=2)  # fmt: skip
    # 3 patches + 2 prefix tokens: patch linear 2*12*4*3, blocks 2*(4*16 + 2*4*16)*5, attention 4*5^2*4
    assert ttft.vit_flops(config, [3]) == 288 + 1920 + 400
    assert ttft.vit_flops(config, [3, 3], video=True) == 2 * (576 + 1920 + 400)
    assert ttft.projector_flops((4, 8, 2), tokens=3) == 2 * 3 * (4 * 8 + 8 * 2)


def test_parakeet_flops_by_hand():
    from encoders import ParakeetConfig

    config = ParakeetConfig(hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
                            conv_kernel_size=3, subsampling_factor=2, subsampling_conv_channels=2,
                            num_mel_bins=4)  # fmt: skip
    # 4 frames x 4 mels -> 2 x 2 after the 3x3 stride-2 conv (2 channels), linear 2*2 -> 4 over 2 steps
    subsampling = 2 * 2 * 9 * 4 + 2 * 4 * 4 * 2
    # per token: feed-forwards 2*2*2*4*8, q/k/v/o 2*4*16, convolution 2*(2*16 + 4*3 + 16)
    per_token = 256 + 128 + 120
    layer = 2 * per_token + 2 * 16 * 3 + 6 * 4 * 4  # 2 tokens, 3 relative distances, attention
    assert ttft.parakeet_flops(config, [4]) == subsampling + layer


def test_lm_flops_count_active_weights_and_causal_attention():
    from backbone import HybridConfig, HybridLM

    base = dict(vocab_size=16, hidden_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
                intermediate_size=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=4,
                moe_shared_expert_intermediate_size=6, n_group=1, topk_group=1)  # fmt: skip
    with torch.device("meta"):
        dense = HybridLM(HybridConfig.from_dict({**base, "hybrid_override_pattern": "-*"}))
        moe = HybridLM(HybridConfig.from_dict({**base, "hybrid_override_pattern": "E"}))
    head = 2 * 8 * 16  # the last position only
    # MLP 8*4 + 4*8, attention q 8*8, k and v 8*4, o 8*8; causal scores and values 2*10*11*2*4
    assert ttft.lm_flops(dense, tokens=10) == 2 * (64 + 192) * 10 + head + 1760
    # router 4*8, 2 of 4 experts of 2*8*4 each, the shared expert 2*8*6
    assert ttft.lm_flops(moe, tokens=10) == 2 * (32 + 2 * 64 + 96) * 10 + head


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", ["image", "audio"])
def test_profile_ttft_splits_the_time_by_tower_and_module_kind(case, tmp_path, capsys, one_thread):
    profile_ttft = _script("profile_ttft")
    result = profile_ttft.main(
        ["--case", case, "--tiny", "--device", "cpu", "--json", str(tmp_path / "p.json")]
    )
    tower = "vision" if case == "image" else "audio"
    ranges = result["ranges"]
    for label in (
        "lm: mamba",
        "lm: moe",
        "lm: attention",
        "lm: head",
        f"projector: {tower}",
        f"{tower}: (rest)",
    ):
        assert ranges[label]["calls"] >= 1 and ranges[label]["seconds"] > 0, label
    assert ranges["lm: mamba"]["calls"] == 4 and ranges["lm: moe"]["calls"] == 3  # the MEM*EMEM cut
    assert not any(label.startswith("vision" if case == "audio" else "audio") for label in ranges)
    assert result["floor_s"] > 0 and json.loads((tmp_path / "p.json").read_text())["case"] == result["case"]
    assert "lm: mamba" in capsys.readouterr().out


def test_profile_ttft_counts_kernels_not_its_own_ranges_on_the_gpu_timeline():
    """On CUDA the profiler also puts each labelled range on the GPU timeline; summing those with the
    kernels would count the same time twice."""
    profile_ttft = _script("profile_ttft")
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(name, device_type, ms):
        return types.SimpleNamespace(name=name, device_type=device_type, device_time=ms * 1e3)

    events = [
        event("omni::vision: (all)", cuda, 10.0),
        event("omni::vision: Mlp", cuda, 6.0),
        event("gemm", cuda, 6.0),
        event("gemm", cuda, 3.0),
        event("omni::vision: Mlp", cpu, 0.0),
    ]
    assert [e.name for e in events if profile_ttft.is_kernel(e)] == ["gemm", "gemm"]
    assert profile_ttft.top_kernels(events, 5) == [("gemm", 2, pytest.approx(0.009))]


def test_profile_ttft_gives_each_range_the_kernels_inside_its_gpu_span():
    """Triton's kernels are tied to no CPU range by the profiler; they still belong to the range whose
    GPU-timeline span they start in (and to every range around it)."""
    profile_ttft = _script("profile_ttft")
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(name, device_type, start, end):
        span = types.SimpleNamespace(start=start, end=end)
        return types.SimpleNamespace(
            name=name, device_type=device_type, time_range=span, device_time=end - start
        )

    events = [
        event("omni::vision: (all)", cuda, 0, 100),
        event("omni::vision: Mlp", cuda, 10, 40),
        event("omni::vision: Mlp", cuda, 60, 70),
        event("gemm", cuda, 10, 30),  # in the first Mlp span
        event("_triton_seam", cuda, 31, 35),  # in the first Mlp span, launched by no ATen operator
        event("_triton_seam", cuda, 45, 55),  # between the Mlp spans: the tower's own
        event("gemm", cuda, 60, 70),
        event("gemm", cuda, 200, 210),  # outside every range
        event("omni::vision: Mlp", cpu, 10, 40),
        event("omni::vision: Mlp", cpu, 60, 70),
        event("omni::vision: (all)", cpu, 0, 100),
    ]
    spans = profile_ttft.kernels_in_spans(events)
    assert spans["vision: Mlp"] == (3, pytest.approx(34e-6))
    assert spans["vision: (all)"] == (4, pytest.approx(44e-6))
    table = profile_ttft.with_rest(profile_ttft.per_range(events, on_gpu=True))
    assert table["vision: Mlp"] == [2, 3, pytest.approx(34e-6)]
    assert table["vision: (rest)"] == [1, 1, pytest.approx(10e-6)]


def test_bench_pages_times_batched_single_and_transformers(tmp_path, capsys, one_thread):
    bench_pages = _script("bench_pages")
    out = tmp_path / "pages.json"
    result = bench_pages.main(["--tiny", "--device", "cpu", "--repeats", "1", "--json", str(out)])
    assert list(result["rows"]) == list(bench_pages.TINY_CASES)
    for row in result["rows"].values():
        for key in ("ours_s", "ours_one_at_a_time_s", "transformers_s", "transformers_over_ours"):
            _positive(row | {"case": "pages"}, key)
        assert row["max_rel_diff"] <= 1e-6  # batching pages changes no number
    assert json.loads(out.read_text())["rows"].keys() == result["rows"].keys()
    assert "one at a time ms" in capsys.readouterr().out


def test_profile_ttft_gpu_timeline_separates_busy_from_idle():
    profile_ttft = _script("profile_ttft")
    cuda = torch.autograd.DeviceType.CUDA

    def event(name, start, end):
        return types.SimpleNamespace(
            name=name, device_type=cuda, time_range=types.SimpleNamespace(start=start, end=end)
        )

    events = [
        event("gemm", 0, 100),
        event("overlapping", 90, 120),  # counted once where it overlaps
        event("omni::vision: Mlp", 0, 400),  # a range's span, not a kernel
        event("short gap", 130, 200),  # 10 us idle before it
        event("long gap", 300, 400),  # 100 us idle before it
    ]
    timeline = profile_ttft.gpu_timeline(events)
    assert timeline["span_s"] == pytest.approx(400e-6)
    assert timeline["busy_s"] == pytest.approx(290e-6)
    assert timeline["idle_s"] == pytest.approx(110e-6)
    assert timeline["idle_long_s"] == pytest.approx(100e-6)
    assert profile_ttft.gpu_timeline([])["span_s"] == 0.0


def test_bench_encoder_attention_smoke(tmp_path, capsys, one_thread):
    bench = _script("bench_encoder_attention")
    result = bench.main(["--tiny", "--device", "cpu", "--repeats", "3", "--json", str(tmp_path / "a.json")])
    assert list(result["single"]) == list(bench.TINY_SINGLE)
    for row in result["single"].values():
        assert row["default"]["ms"] > 0
    equal = result["packed"]["3 of 20"]
    assert set(equal) == {"per image", "one batched call"}
    assert all(way["ms"] > 0 and way["max_rel_diff"] <= 1e-6 for way in equal.values())
    assert set(result["packed"]["mixed 9..30"]) == {"per image"}  # no batched call for mixed sizes
    assert "packed images" in capsys.readouterr().out


def test_host_marks_walks_one_forward_in_order(tmp_path, capsys, one_thread):
    host_marks = _script("host_marks")
    result = host_marks.main(
        ["--case", "image", "--tiny", "--device", "cpu", "--repeats", "1", "--json", str(tmp_path / "m.json")]
    )
    labels = [row["mark"] for row in result["marks"]]
    for label in ("embed >", "vit patch embed >", "vit attention 0 >", "vision projector <", "lm 0 mamba >",
                  "lm 7 mamba <", "lm head <"):  # fmt: skip
        assert label in labels, label
    assert labels[0] == "start" and labels[-1] == "end"
    hosts = [row["host_ms"] for row in result["marks"]]
    assert hosts == sorted(hosts) and len(result["wall_ms"]) == 1
    assert json.loads((tmp_path / "m.json").read_text())["marks"][-1]["mark"] == "end"
    assert "vit attention 0 >" in capsys.readouterr().out


def test_host_marks_finds_where_the_gpu_waited():
    """The GPU waits on the host until the first point it reaches later than the host queued it, and at
    every point it reaches as soon as it is queued."""
    host_marks = _script("host_marks")
    rows = [
        {"mark": "start", "host_ms": 0.0, "gpu_ms": 0.0},
        {"mark": "a", "host_ms": 1.0, "gpu_ms": 1.01},
        {"mark": "b", "host_ms": 1.5, "gpu_ms": 1.52},
        {"mark": "c", "host_ms": 2.0, "gpu_ms": 30.0},
        {"mark": "d", "host_ms": 40.0, "gpu_ms": 40.02},
        {"mark": "end", "host_ms": 41.0, "gpu_ms": 60.0},
    ]
    summary = host_marks.summary(rows)
    assert summary["gpu_waited_until_ms"] == pytest.approx(1.52)
    assert summary["gpu_waited_at"] == ["a", "b", "d"]
    assert summary["end_gpu_ms"] == 60.0
    assert host_marks.summary([{"mark": "start", "host_ms": 0.0, "gpu_ms": None}]) == {"end_host_ms": 0.0}
