"""Cost-equivalent stand-ins for FaceFusion's production models, for GPU benchmarks without the real files.

    python benchmarks/proxy_models.py OUT_DIR [names...] [--time-all] [--fp16|--fp32] [--scale F]

Each proxy is the contract model of tests/contract_models.py (the production I/O contract: tensor names,
shapes, dtypes, dynamic batch, value ranges, inswapper's emap as the last initializer) with a stack of 3x3
Conv + ReLU layers spliced in so that one call costs about what the real model costs:

    image input -> Conv 3->32 /2 -> ReLU -> Conv 32->C /2 -> ReLU -> L x (Conv C->C 3x3 -> ReLU)
                -> ReduceMean (per item) -> x 1e-6 -> added to the contract graph's pre-activation output

The branch reads the input, so ONNX Runtime cannot constant-fold it, and 1e-6 x a bounded mean keeps the
outputs in the contract's range (the add sits before the final Sigmoid/Tanh where there is one). The
layers share one weight tensor (files stay small; per-call compute is unchanged) scaled so that each layer
is a contraction with a positive bias: activations converge to O(0.1) whatever the depth, with no
overflow, no NaN and no denormals. C and L are chosen so that the multiply-accumulates (MACs) per call
of batch 1 match the target within a few per cent.

Targets (issue 8) are the figures published as "GFLOPs" for each model. Model zoos count a
multiply-accumulate as one "FLOP" (the real scrfd_2.5g file, counted by `count_macs` at 640x640, has
2.79 G MACs), so the targets are taken as G MACs; the CLI prints G MACs and GFLOP = 2 x MACs.
`--scale 0.5` halves every target (targets read as 2-op FLOPs).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from contract_models import BUILDERS, _init, _rng  # noqa: E402  (tests/ on the path first)

# per-call compute targets in G MACs (the "GFLOPs" model zoos publish), batch 1
TARGET_GMACS = {
    "scrfd": 2.5,  # scrfd_2.5g.onnx at 640x640
    "arcface_w600k_r50": 12.6,
    "hyperswap_1a_256": 64.0,
    "simswap_256": 126.0,
    "inswapper_128": 175.0,
    "gfpgan_1.4": 396.0,
    "codeformer": 810.0,
}
ALIASES = {"scrfd_2.5g": "scrfd"}
# the image input the conv stack reads, and its side
STACK_INPUT = {"scrfd": ("input", 640), "arcface_w600k_r50": ("input", 112),
               "hyperswap_1a_256": ("target", 256), "simswap_256": ("target", 256),
               "inswapper_128": ("target", 128), "gfpgan_1.4": ("input", 512), "codeformer": ("input", 512)}
EPSILON = 1e-6
STEM = 32  # channels of the first (stride-2) conv
CHANNELS = (512, 384, 256, 192, 128, 96, 64, 48, 32, 16)
MIN_LAYERS = 12
CPU_TIMING_LIMIT_GMACS = 70.0  # larger proxies are timed on CPU only with --time-all


@dataclass(frozen=True)
class ConvPlan:
    size: int  # input side S
    channels: int  # C of the body, at S/4
    layers: int  # L body convs C->C

    def convs(self) -> list[tuple[int, int, int, int]]:
        """(c_in, c_out, stride, output side) of every conv, in order."""
        half, quarter = -(-self.size // 2), -(-self.size // 4)
        return [(3, STEM, 2, half), (STEM, self.channels, 2, quarter)] + \
            [(self.channels, self.channels, 1, quarter)] * self.layers

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the conv stack for one batch item (3x3 kernels)."""
        return sum(side * side * c_out * c_in * 9 for c_in, c_out, _, side in self.convs())


def plan_for(size: int, target_macs: float) -> ConvPlan:
    """The widest body (C) that still needs >= MIN_LAYERS layers, L rounded to the nearest layer."""
    best = None
    for channels in CHANNELS:
        fixed = ConvPlan(size, channels, 0).macs
        per_layer = ConvPlan(size, channels, 1).macs - fixed
        layers = max(0, round((target_macs - fixed) / per_layer))
        best = ConvPlan(size, channels, layers)
        if layers >= MIN_LAYERS:
            return best
    return best


def _stack(input_name: str, plan: ConvPlan, fp16: bool, out_rank: int) -> tuple[list, list, str]:
    """Nodes and initializers of the conv stack and its epsilon term; the term's tensor name."""
    dtype = np.float16 if fp16 else np.float32
    rng = _rng(17)
    nodes, inits = [], []
    x = input_name
    if fp16:
        nodes.append(helper.make_node("Cast", [x], ["proxy_in16"], to=TensorProto.FLOAT16))
        x = "proxy_in16"

    def weights(c_in: int, c_out: int, gain: float) -> np.ndarray:
        return rng.standard_normal((c_out, c_in, 3, 3)) * gain

    convs = plan.convs()
    body_done = False
    for k, (c_in, c_out, stride, _) in enumerate(convs):
        if k < 2:  # stem: He init, own weights
            w, b = f"proxy_w{k}", f"proxy_b{k}"
            inits += [_init(w, weights(c_in, c_out, math.sqrt(2.0 / (9 * c_in))), dtype),
                      _init(b, np.full(c_out, 0.05), dtype)]
        else:  # body: one shared weight; spectral norm <= 9 * 2 * sigma * sqrt(C) = 0.5 -> a contraction
            w, b = "proxy_w_body", "proxy_b_body"
            if not body_done:
                inits += [_init(w, weights(c_in, c_out, 0.5 / (18 * math.sqrt(c_in))), dtype),
                          _init(b, 0.1 + 0.05 * rng.random(c_out), dtype)]
                body_done = True
        nodes += [helper.make_node("Conv", [x, w, b], [f"proxy_c{k}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                   strides=[stride, stride], name=f"proxy_conv{k}"),
                  helper.make_node("Relu", [f"proxy_c{k}"], [f"proxy_r{k}"], name=f"proxy_relu{k}")]
        x = f"proxy_r{k}"
    nodes.append(helper.make_node("ReduceMean", [x], ["proxy_mean"], axes=[1, 2, 3], keepdims=1))
    mean = "proxy_mean"
    if fp16:
        nodes.append(helper.make_node("Cast", [mean], ["proxy_mean32"], to=TensorProto.FLOAT))
        mean = "proxy_mean32"
    nodes.append(helper.make_node("Mul", [mean, "proxy_eps"], ["proxy_term4"]))
    inits.append(_init("proxy_eps", [EPSILON]))
    term = "proxy_term4"
    if out_rank != 4:  # [N,1,1,1] -> [N,1] / [N,1,1]: broadcasts over the output's trailing axes
        nodes.append(helper.make_node("Reshape", [term, "proxy_shape"], ["proxy_term"]))
        inits.append(_init("proxy_shape", [-1] + [1] * (out_rank - 1), np.int64))
        term = "proxy_term"
    return nodes, inits, term


def _splice(model: onnx.ModelProto, stack_nodes: list, stack_inits: list, term: str) -> None:
    """Add `term` to the first output: before its final Sigmoid/Tanh if it has one (the value range stays
    the contract's), else right after the node that makes it (consumers then read the sum)."""
    graph = model.graph
    out = graph.output[0].name
    index, producer = next((i, n) for i, n in enumerate(graph.node) if out in n.output)
    nodes = list(graph.node)
    if producer.op_type in ("Sigmoid", "Tanh"):
        pre = producer.input[0]
        add = helper.make_node("Add", [pre, term], [f"{pre}_proxy"], name="proxy_add")
        producer.input[0] = f"{pre}_proxy"
        nodes.insert(index, add)
    else:
        slot = list(producer.output).index(out)
        producer.output[slot] = f"{out}_contract"
        nodes.insert(index + 1, helper.make_node("Add", [f"{out}_contract", term], [out], name="proxy_add"))
    del graph.node[:]
    graph.node.extend(stack_nodes + nodes)  # the stack reads only a graph input: it may come first
    inits = list(graph.initializer)
    del graph.initializer[:]
    graph.initializer.extend(stack_inits + inits)  # the contract's own stay last (inswapper's emap)


def canonical(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in TARGET_GMACS:
        raise SystemExit(f"{name}: no proxy (known: {', '.join(TARGET_GMACS)})")
    return name


def build_proxy(name: str, folder, fp16: bool | None = None, scale: float = 1.0) -> Path:
    """Write `<folder>/<name>.proxy.onnx` and return its path. `fp16`: the conv stack in float16 (I/O stays
    the contract's float32); None = the registry's precision for the model. `scale` multiplies the target."""
    from ffray.models.registry import get_spec

    name = canonical(name)
    if fp16 is None:
        fp16 = get_spec(name).precision == "fp16"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    contract_path = BUILDERS[name](folder / f"{name}.contract.onnx")
    model = onnx.load(str(contract_path))
    contract_path.unlink()
    input_name, size = STACK_INPUT[name]
    plan = plan_for(size, TARGET_GMACS[name] * scale * 1e9)
    out_rank = len(model.graph.output[0].type.tensor_type.shape.dim)
    nodes, inits, term = _stack(input_name, plan, fp16, out_rank)
    _splice(model, nodes, inits, term)
    model.graph.name = f"{name}_proxy"
    model.doc_string = (f"ffray cost proxy for {name}: {plan.channels} ch x {plan.layers} 3x3 conv layers at "
                        f"{-(-size // 4)}px, {plan.macs / 1e9:.2f} G MACs per item, {'fp16' if fp16 else 'fp32'}")
    onnx.checker.check_model(model)
    path = folder / f"{name}.proxy.onnx"
    onnx.save(model, str(path))
    return path


def proxy_plan(name: str, scale: float = 1.0) -> ConvPlan:
    name = canonical(name)
    return plan_for(STACK_INPUT[name][1], TARGET_GMACS[name] * scale * 1e9)


# --- verification -----------------------------------------------------------------------------------

def count_macs(path, batch: int = 1, sizes: dict[str, int] | None = None) -> int:
    """Multiply-accumulates of every Conv / MatMul / Gemm in the file, from ONNX shape inference (dynamic
    batch set to `batch`, other dynamic dims from `sizes` by input name, e.g. SCRFD's {'input': 640})."""
    from onnx import shape_inference

    model = onnx.load(str(path))
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.dim_value = batch if axis == 0 else (sizes or {}).get(vi.name, 1)
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = shapes[node.input[1]]
            total += math.prod(shapes[node.output[0]]) * math.prod(w[1:])  # w[1] is C_in / groups
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes[node.input[0]]
            b = shapes[node.input[1]]
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            total += math.prod(shapes[node.output[0]]) * (b[-1] if trans_b else (a[-1] if a else 1))
    return total


def optimised_conv_count(path) -> int:
    """Conv nodes left after ONNX Runtime's full (ORT_ENABLE_ALL) optimisation on CPU, fused or not."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        optimised = onnx.load(options.optimized_model_filepath)
    return sum(n.op_type in ("Conv", "FusedConv") for n in optimised.graph.node)


def check_proxy(name: str, path) -> None:
    """The proxy passes ffray's contract check (as `ffray swap --...-model NAME=PATH` runs it), ORT keeps
    every conv of the stack, and a run gives finite outputs in the contract's range."""
    import onnxruntime as ort

    from ffray.models.contract import check_contract
    from ffray.models.registry import get_spec
    from ffray.models.sessions import create_session
    from ffray.models.store import ModelStore

    name = canonical(name)
    spec = get_spec(name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check_contract(spec, session, path)
    with tempfile.TemporaryDirectory() as cache:  # the CLI's way: resolve NAME=PATH, session with the check
        create_session(ModelStore(cache_dir=cache).resolve(f"{name}={path}"))
    convs = optimised_conv_count(path)
    planned = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
    if convs < planned:
        raise AssertionError(f"{path}: ORT left {convs} convs of the {planned} planned")
    outputs = session.run(None, _feeds(session))
    first = outputs[0].astype(np.float64)
    if not np.isfinite(first).all():
        raise AssertionError(f"{path}: non-finite output")
    low, high = {"Sigmoid": (0, 1), "Tanh": (-1, 1)}.get(_final_op(path), (-np.inf, np.inf))
    if first.min() < low or first.max() > high:
        raise AssertionError(f"{path}: output outside [{low}, {high}]")


def _final_op(path) -> str:
    graph = onnx.load(str(path), load_external_data=False).graph
    out = graph.output[0].name
    return next(n.op_type for n in graph.node if out in n.output)


def _feeds(session, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [batch if k == 0 and not isinstance(d, int) else d if isinstance(d, int) else 640
                 for k, d in enumerate(i.shape)]
        dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}.get(i.type, np.float32)
        feeds[i.name] = rng.uniform(-1, 1, shape).astype(dtype)
    if "weight" in feeds:
        feeds["weight"] = np.array([0.5], np.float64)
    return feeds


def time_cpu(path, runs: int = 5, budget_s: float = 10.0) -> float:
    """Median ms per call of batch 1 on CPU (ORT's default threads), after one warm-up call."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = _feeds(session)
    session.run(None, feeds)
    times = []
    started = time.perf_counter()
    while len(times) < runs and (not times or time.perf_counter() - started < budget_s):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("names", nargs="*", help=f"default: all of {', '.join(TARGET_GMACS)}")
    parser.add_argument("--time-all", action="store_true",
                        help=f"also time proxies above {CPU_TIMING_LIMIT_GMACS:.0f} G MACs on CPU (slow)")
    parser.add_argument("--no-time", action="store_true", help="build and check only")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="fp16", action="store_true", default=None,
                           help="every conv stack in float16 (default: the registry's precision per model)")
    precision.add_argument("--fp32", dest="fp16", action="store_false", help="every conv stack in float32")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every compute target (0.5: FLOP=2 ops)")
    parser.add_argument("--real-scrfd", type=Path,
                        default=REPO.parent / "shared/assets/models/scrfd_2.5g.onnx",
                        help="time and count this real SCRFD beside its proxy, where the file exists")
    args = parser.parse_args()
    names = [canonical(n) for n in args.names] or list(TARGET_GMACS)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the contract graphs' unused emap initializer warns otherwise

    print(f"{'model':<18} {'file':<44} {'target':>7} {'G MACs':>8} {'GFLOP':>8} {'counted':>8} "
          f"{'layers':>9} {'ORT convs':>9} {'CPU ms b1':>10}")
    for name in names:
        path = build_proxy(name, args.out_dir, fp16=args.fp16, scale=args.scale)
        plan = proxy_plan(name, args.scale)
        check_proxy(name, path)
        counted = count_macs(path, sizes={"input": 640})
        convs = optimised_conv_count(path)
        if args.no_time:
            ms = "-"
        elif plan.macs / 1e9 > CPU_TIMING_LIMIT_GMACS and not args.time_all:
            ms = "skipped"
        else:
            ms = f"{time_cpu(path):.1f}"
        print(f"{name:<18} {str(path):<44} {TARGET_GMACS[name] * args.scale:>7.1f} {plan.macs / 1e9:>8.2f} "
              f"{2 * plan.macs / 1e9:>8.2f} {counted / 1e9:>8.2f} {f'{plan.channels}x{plan.layers}':>9} "
              f"{convs:>9} {ms:>10}", flush=True)
        if name == "scrfd" and args.real_scrfd.is_file() and not args.no_time:
            real = count_macs(args.real_scrfd, sizes={"input.1": 640})
            print(f"{'  real scrfd':<18} {str(args.real_scrfd):<44} {'':>7} {real / 1e9:>8.2f} "
                  f"{2 * real / 1e9:>8.2f} {real / 1e9:>8.2f} {'':>9} {optimised_conv_count(args.real_scrfd):>9} "
                  f"{time_cpu(args.real_scrfd):>10.1f}", flush=True)
    print("G MACs / GFLOP: the conv stack per batch item, analytical (GFLOP = 2 x MACs); counted: every "
          "Conv/MatMul of the file from ONNX shape inference; layers: channels x body layers; ORT convs: "
          "Conv/FusedConv nodes left after ORT_ENABLE_ALL on CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
