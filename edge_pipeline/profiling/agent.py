#!/usr/bin/env python3
"""edge-pipeline device agent: time and size one TFLite model on this machine.

Self-contained on purpose: it is copied to boards and phones and run there, so it needs only
Python 3.8+, numpy and one TFLite runtime (ai-edge-litert, tflite-runtime or tensorflow), and it
never imports edge_pipeline. It prints one JSON object on stdout.

Modes (each run in a fresh process, as benchmark_model separates them):
  timing  init, first inference, warmup, then timed runs until both --min-runs and --min-seconds
          are met (or --max-seconds is hit); latency statistics and validity against the budget.
  memory  load, allocate and run a few inferences; peak resident memory of the process.
  outputs run the inputs of --inputs (a .npy, NHWC float) and return the dequantized outputs in the
          JSON (or save them to --save as .npy).
  ops     the model argument is a zip of single-op models: each timed in interleaved rounds (the
          device's latency table, see edge_pipeline/profiling/latency_table.py).
  adaptive  the model argument is an early-exit chain (a zip: chain.json, segment files, the plain
          model, inputs.npy; see edge_pipeline/profiling/exits.py): adaptive inference on every input
          for each threshold, the chain with no exit (worst case) and the plain model, each input
          timed end to end; accuracy, mean and p90 latency and the exit histogram per threshold.

--sha256 makes the agent refuse a model whose hash differs (a truncated or altered copy on a board).
Per-op timing: the Python interpreter APIs of these runtimes expose no op profiler, so the agent
reports the model's op list and says so; TFLite's benchmark_model (adb runtime) gives per-op times.
"""

import argparse
import json
import math
import os
import platform
import sys
import time

AGENT_VERSION = "3"
MAX_MODEL_BYTES = 2 << 30  # a flatbuffer cannot address more
MAX_INPUTS_BYTES = 2 << 30


def load_runtime(preferred):
    """(name, version, Interpreter class) of the first importable runtime, preferred first."""
    order = ["ai-edge-litert", "tflite-runtime", "tensorflow"]
    if preferred and preferred != "auto":
        order = [preferred]
    errors = []
    for name in order:
        try:
            if name == "ai-edge-litert":
                from ai_edge_litert import interpreter as mod

                return name, _dist_version("ai-edge-litert", "ai_edge_litert"), mod.Interpreter
            if name == "tflite-runtime":
                from tflite_runtime import interpreter as mod

                return name, _dist_version("tflite-runtime", "tflite_runtime"), mod.Interpreter
            if name == "tensorflow":
                import tensorflow as tf

                return name, tf.__version__, tf.lite.Interpreter
        except Exception as exc:  # ImportError, or a broken native library
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(f"{name}: {why}")
    raise RuntimeError(f"no TFLite runtime importable ({'; '.join(errors)})")


def _dist_version(dist, module):
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        mod = __import__(module)
        return getattr(mod, "__version__", "unknown")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model", "processor") and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value and not value.isdigit():
                        return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb():
    """Peak resident set size of this process in MB (VmHWM, else getrusage)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024.0 * 1024.0) if sys.platform == "darwin" else usage / 1024.0


def current_rss_mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def random_input(detail, np, seed=0):
    rng = np.random.RandomState(seed)
    shape = [int(s) for s in detail["shape"]]
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.randint(info.min, info.max + 1, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def activation_like(detail, np, seed=0):
    """Inputs shaped like a CNN's inner activations: after a ReLU, about half are zero. Native kernels do
    not care, but an emulator's floating point does (qemu runs a multiply by zero faster: dense random
    inputs made single float ops ~2x slower than inside the model)."""
    if np.issubdtype(detail["dtype"], np.integer):
        return random_input(detail, np, seed)
    return np.maximum(random_input(detail, np, seed), 0).astype(detail["dtype"])


def quantize(x, detail, np):
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(y, detail, np):
    if not np.issubdtype(detail["dtype"], np.integer):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def stats(ms):
    values = sorted(ms)
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {
        "runs": n, "min": values[0], "median": percentile(values, 50), "mean": mean,
        "p90": percentile(values, 90), "max": values[-1], "std": var ** 0.5,
    }


def make_interpreter(cls, model, threads):
    return cls(model_path=model, num_threads=threads)


def check_file(path, limit, what):
    """Refuse anything but a regular file within `limit` bytes, before any byte is read (a symlink
    to /dev/zero or a FIFO would otherwise be read forever)."""
    if not os.path.exists(path):
        raise RuntimeError(f"{what} not found: {path}")
    if not os.path.isfile(path):  # follows symlinks; true only for a regular file
        raise RuntimeError(f"{what} is not a regular file: {path}")
    if os.path.getsize(path) > limit:
        raise RuntimeError(f"{what} is larger than {limit} bytes: {path}")


def file_sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_affinity():
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def op_profile(interpreter):
    """Op types in execution order; per-op times are not exposed by the Python interpreter API."""
    try:
        # private, but the only way to list ops here
        ops = [op.get("op_name") for op in interpreter._get_ops_details()]
    except Exception:
        ops = []  # no op list: op_counts is None, as for a model without ops
    counts = dict.fromkeys(ops, 0)  # in execution order of first appearance
    for name in ops:
        counts[name] += 1
    return {"available": False, "op_counts": counts or None,
            "reason": "the Python interpreter API has no per-op timer; use runtime benchmark_model for per-op times"}


def mode_timing(args, np, runtime):
    name, version, cls = runtime
    t0 = time.perf_counter()
    interpreter = make_interpreter(cls, args.model, args.threads)
    interpreter.allocate_tensors()
    init_ms = (time.perf_counter() - t0) * 1000.0
    inputs = interpreter.get_input_details()
    for detail in inputs:
        interpreter.set_tensor(detail["index"], random_input(detail, np))
    t0 = time.perf_counter()
    interpreter.invoke()
    first_ms = (time.perf_counter() - t0) * 1000.0
    warm = []
    for _ in range(args.warmup):
        t0 = time.perf_counter()
        interpreter.invoke()
        warm.append((time.perf_counter() - t0) * 1000.0)
    times = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - started
        if len(times) >= args.min_runs and elapsed >= args.min_seconds:
            break
        if elapsed >= args.max_seconds:
            break
    latency = stats(times)
    ops = op_profile(interpreter)
    reasons = []
    if latency["runs"] < args.min_runs:
        reasons.append(f"only {latency['runs']:d} timed runs in max_seconds={args.max_seconds:g} (min_runs={args.min_runs:d})")
    if elapsed < args.min_seconds:
        reasons.append(f"timed for {elapsed:.2f}s < min_seconds={args.min_seconds:g}")
    # Noise is judged on a robust spread (1.4826 * median absolute deviation estimates the std of
    # the bulk): one scheduler hiccup among thousands of runs should not void a measurement, but
    # a bimodal or drifting run should. The raw std stays in latency_ms.
    median = latency["median"]
    mad = percentile(sorted(abs(t - median) for t in times), 50)
    rel_std = 1.4826 * mad / median if median else 0.0
    if rel_std > args.max_rel_std:
        reasons.append(f"noisy: robust std/median {rel_std:.2f} > max_rel_std {args.max_rel_std:g}")
    return {
        "init_ms": init_ms, "first_inference_ms": first_ms,
        "warmup": {"runs": len(warm), "mean_ms": (sum(warm) / len(warm)) if warm else None},
        "latency_ms": latency, "timed_seconds": elapsed, "rel_std": rel_std,
        "valid": not reasons, "invalid_reasons": reasons, "op_profile": ops,
    }


def mode_memory(args, np, runtime):
    name, version, cls = runtime
    baseline = current_rss_mb()
    interpreter = make_interpreter(cls, args.model, args.threads)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], random_input(detail, np))
    for _ in range(max(1, args.memory_runs)):
        interpreter.invoke()
    return {"peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline}


def mode_outputs(args, np, runtime):
    name, version, cls = runtime
    interpreter = make_interpreter(cls, args.model, args.threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    check_file(args.inputs, MAX_INPUTS_BYTES, "inputs file")
    data = np.load(args.inputs, allow_pickle=False)
    results = []
    for sample in data:
        interpreter.set_tensor(inp["index"], quantize(sample[None], inp, np))
        interpreter.invoke()
        results.append(dequantize(interpreter.get_tensor(out["index"]), out, np)[0])
    stacked = np.stack(results).astype(np.float32)
    if args.save:
        np.save(args.save, stacked)
        return {"outputs": len(results), "saved": args.save}
    # Inline: a few samples x classes floats, so any transport can return them in the JSON.
    return {"outputs": len(results), "shape": list(stacked.shape), "values": stacked.tolist()}


# Up to this many classes an exit's check runs in plain Python: numpy's per-call overhead (~1 us a
# call, ~8 calls) is more than the arithmetic on ten logits.
SMALL_CLASSES = 64


def _uncertainty(total, spread, classes, measure):
    """From S = sum(exp(z)) and D = sum(-z * exp(z)) with z = logits - max(logits): 1 - the largest
    probability (1 - 1/S), or the softmax's entropy log(S) + D/S over log(classes)."""
    if measure == "max_softmax":
        return 1.0 - 1.0 / total
    return (math.log(total) + spread / total) / math.log(classes) if classes > 1 else 0.0


def _exit_reader(detail, measure, np):
    """One sample's raw logits tensor -> (uncertainty, predicted class), with everything that does not
    depend on the values worked out once: this runs after every exit on the device, where with small
    models it costs as much as a segment. Quantized logits need no dequantizing: the softmax only
    sees gaps to the row's maximum, so exp(-scale * gap) comes from a table over the integer gaps."""
    classes = int(detail["shape"][-1])
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer) and np.iinfo(dtype).bits <= 8:
        scale = float(detail["quantization"][0]) or 1.0
        exp_of = [math.exp(-scale * gap) for gap in range(256)]
        spread_of = [scale * gap * e for gap, e in enumerate(exp_of)]
        exp_table, spread_table = np.asarray(exp_of), np.asarray(spread_of)

        def read_quantized(raw):
            if classes <= SMALL_CLASSES:
                values = raw.reshape(-1).tolist()
                top = max(values)
                total = spread = 0.0
                for v in values:
                    total += exp_of[top - v]
                    spread += spread_of[top - v]
                return _uncertainty(total, spread, classes, measure), values.index(top)
            row = raw.reshape(-1).astype(np.int32)
            top = int(row.max())
            gaps = top - row
            return (_uncertainty(float(exp_table[gaps].sum()), float(spread_table[gaps].sum()), classes, measure),
                    int(row.argmax()))

        return read_quantized
    to_float = _dequantizer(detail, np)

    def read_float(raw):
        row = to_float(raw).reshape(-1).astype(np.float64)
        if classes <= SMALL_CLASSES:
            values = row.tolist()
            top = max(values)
            total = spread = 0.0
            for v in values:
                e = math.exp(v - top)
                total += e
                spread += (top - v) * e
            return _uncertainty(total, spread, classes, measure), values.index(top)
        z = row - row.max()
        e = np.exp(z)
        return _uncertainty(float(e.sum()), -float(np.dot(e, z)), classes, measure), int(row.argmax())

    return read_float


def _quantizer(detail, np):
    """x (float) -> the tensor's input, with the conversion worked out once (not per call)."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return lambda x: x.astype(dtype, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    inverse, low, high = 1.0 / scale, float(info.min), float(info.max)

    def quantize_fast(x):
        q = np.rint(x * inverse + zero)
        np.minimum(q, high, out=q)
        np.maximum(q, low, out=q)
        return q.astype(dtype)

    return quantize_fast


def _dequantizer(detail, np):
    if not np.issubdtype(detail["dtype"], np.integer):
        return lambda y: y.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    return lambda y: (y.astype(np.float32) - zero) * scale


def _handoff(features_detail, input_detail, nchw, np):
    """Segment k's feature output -> segment k + 1's input (NHWC). The converter calibrates both ends
    of a cut on the same tensor, so their quantization usually matches and the integers pass
    unchanged; an output the converter left NCHW is transposed."""
    same_type = features_detail["dtype"] == input_detail["dtype"]
    (s1, z1), (s2, z2) = features_detail["quantization"], input_detail["quantization"]
    layout = (lambda y: np.ascontiguousarray(y.transpose(0, 2, 3, 1))) if nchw else (lambda y: y)
    if same_type and (not np.issubdtype(input_detail["dtype"], np.integer) or (z1 == z2 and abs(s1 - s2) <= 1e-6 * abs(s2))):
        return layout
    dequantize_fast, quantize_fast = _dequantizer(features_detail, np), _quantizer(input_detail, np)
    return lambda y: quantize_fast(dequantize_fast(layout(y)))


def _latency_summary(times):
    values = sorted(times)
    return {"mean_ms": sum(values) / len(values), "p90_ms": percentile(values, 90)}


def _adaptive_passes(configs, inputs, repeats, times, answers):
    """Interleaved passes: a change of machine load touches every configuration alike."""
    for repeat in range(repeats):
        for i, (_, fn, threshold) in enumerate(configs):
            results = []
            for n in range(len(inputs)):
                x = inputs[n:n + 1]
                t0 = time.perf_counter()
                result = fn(x) if threshold is None else fn(x, threshold)
                times[i].append((time.perf_counter() - t0) * 1000.0)
                results.append(result)
            if repeat == 0:
                answers[i] = results


def mode_adaptive(args, np, runtime):
    import gc
    import io
    import zipfile

    name, version, cls = runtime
    with zipfile.ZipFile(args.model) as bundle:
        spec = json.loads(bundle.read("chain.json").decode("utf-8"))
        contents = {s["file"]: bundle.read(s["file"]) for s in spec["segments"]}
        plain_bytes = bundle.read(spec["plain"])
        inputs = np.load(io.BytesIO(bundle.read(spec["inputs"])), allow_pickle=False)
    labels = [int(v) for v in spec["labels"]]
    measure, repeats = spec["measure"], int(spec.get("repeats", 1))

    def load(content):
        interpreter = cls(model_content=content, num_threads=args.threads)
        interpreter.allocate_tensors()
        return interpreter

    segments = []
    for s in spec["segments"]:
        interpreter = load(contents[s["file"]])
        outputs = interpreter.get_output_details()
        features = s["features_output"]
        segments.append({"interpreter": interpreter, "input": interpreter.get_input_details()[0]["index"],
                         "input_detail": interpreter.get_input_details()[0],
                         "logits": outputs[s["logits_output"]]["index"], "read": _exit_reader(outputs[s["logits_output"]], measure, np),
                         "features": outputs[features] if features is not None else None,
                         "nchw": s.get("features_layout") == "NCHW"})
    for k, segment in enumerate(segments[:-1]):
        segment["handoff"] = _handoff(segment["features"], segments[k + 1]["input_detail"], segment["nchw"], np)
        segment["features"] = segment["features"]["index"]
    first_input = _quantizer(segments[0]["input_detail"], np)
    plain = load(plain_bytes)
    plain_in, plain_out = plain.get_input_details()[0], plain.get_output_details()[0]
    plain_input, plain_index = _quantizer(plain_in, np), plain_out["index"]
    last = len(segments) - 1

    def run_chain(x, threshold, marks=None):
        """(exit index, predicted class): stop at the first exit whose uncertainty is below threshold.
        `marks[k]` (optional) gets the seconds from the start to exit k's decision."""
        started = time.perf_counter()
        value = first_input(x)
        for k, segment in enumerate(segments):
            interpreter = segment["interpreter"]
            interpreter.set_tensor(segment["input"], value)
            interpreter.invoke()
            if k == last:
                predicted = int(interpreter.get_tensor(segment["logits"]).argmax())
                if marks is not None:
                    marks[k].append(time.perf_counter() - started)
                return k, predicted
            uncertain, predicted = segment["read"](interpreter.get_tensor(segment["logits"]))
            if marks is not None:
                marks[k].append(time.perf_counter() - started)
            if uncertain < threshold:
                return k, predicted
            value = segment["handoff"](interpreter.get_tensor(segment["features"]))
        raise RuntimeError("empty chain")

    def run_plain(x):
        plain.set_tensor(plain_in["index"], plain_input(x))
        plain.invoke()
        return last, int(plain.get_tensor(plain_index)[0].argmax())

    never = -1.0  # no uncertainty is below it: every input runs the whole chain
    # The worst case also clocks each exit's decision: what an input leaving there costs on this device.
    exit_marks = [[] for _ in segments]  # type: list
    configs = [("plain", run_plain, None), ("worst_case", lambda x: run_chain(x, never, exit_marks), None)]  # type: list
    configs += [(t, run_chain, float(t)) for t in spec["thresholds"]]
    for _ in range(max(1, args.warmup)):
        run_plain(inputs[:1])
        run_chain(inputs[:1], never)
    times = {i: [] for i in range(len(configs))}  # type: dict
    answers = {}  # type: dict
    gc.disable()  # a collection inside one timed input would be charged to whichever configuration ran
    try:
        _adaptive_passes(configs, inputs, repeats, times, answers)
    finally:
        gc.enable()

    def summary(i):
        exits = [k for k, _ in answers[i]]
        correct = sum(1 for (_, c), y in zip(answers[i], labels) if c == y)
        counts = [exits.count(k) for k in range(len(segments))]
        return dict(accuracy=correct / max(len(labels), 1), exit_counts=counts, **_latency_summary(times[i]))

    return {"early_exit": True, "samples": len(inputs), "repeats": repeats, "measure": measure,
            "plain": summary(0), "worst_case": summary(1),
            "exit_ms": [1000.0 * sum(m) / max(len(m), 1) for m in exit_marks],
            "thresholds": [dict(threshold=configs[i][0], **summary(i)) for i in range(2, len(configs))]}


def mode_ops(args, np, runtime):
    """The model argument is a zip of single-op models (`ops.json` lists them; see
    edge_pipeline/profiling/latency_table.py): each is timed in `rounds` interleaved passes (so a burst
    of load hits every file a little rather than one a lot), and its latency is the median of its
    per-round medians. A file the runtime cannot load gets an error entry; the others go on."""
    import gc
    import zipfile

    name, version, cls = runtime
    with zipfile.ZipFile(args.model) as bundle:
        spec = json.loads(bundle.read("ops.json").decode("utf-8"))
        contents = {f: bundle.read(f) for f in spec["files"]}
    rounds, min_runs, min_seconds = int(spec["rounds"]), int(spec["min_runs"]), float(spec["min_seconds"])
    medians = {f: [] for f in contents}  # type: dict
    errors = {}  # type: dict
    gc.disable()
    try:
        for _ in range(max(1, rounds)):
            for f, content in contents.items():
                if f in errors:
                    continue
                try:
                    interpreter = cls(model_content=content, num_threads=args.threads)
                    interpreter.allocate_tensors()
                    for detail in interpreter.get_input_details():
                        interpreter.set_tensor(detail["index"], activation_like(detail, np))
                    for _ in range(max(1, args.warmup)):
                        interpreter.invoke()
                except Exception as exc:
                    errors[f] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    continue
                times = []  # type: list
                started = time.perf_counter()
                while len(times) < min_runs or time.perf_counter() - started < min_seconds:
                    t0 = time.perf_counter()
                    interpreter.invoke()
                    times.append((time.perf_counter() - t0) * 1000.0)
                medians[f].append(percentile(sorted(times), 50))
                del interpreter
    finally:
        gc.enable()
    entries = {}
    for f, values in medians.items():
        if f in errors:
            entries[f] = {"error": errors[f]}
        else:
            values.sort()
            median = percentile(values, 50)
            entries[f] = {"ms": median, "rounds": len(values),
                          "spread": (values[-1] - values[0]) / median if median else 0.0}
    return {"ops": entries}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time and size one TFLite model (edge-pipeline agent).")
    parser.add_argument("model")
    parser.add_argument("--mode", choices=["timing", "memory", "outputs", "adaptive", "ops"], default="timing")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--max-rel-std", type=float, default=0.25)
    parser.add_argument("--memory-runs", type=int, default=3)
    parser.add_argument("--inputs", help="outputs mode: .npy of NHWC float inputs")
    parser.add_argument("--save", help="outputs mode: where to save the outputs (.npy; default: inline in the JSON)")
    parser.add_argument("--sha256", help="refuse to run unless the model file has this sha256")
    args = parser.parse_args(argv)

    result = {"agent_version": AGENT_VERSION, "mode": args.mode}
    try:
        import numpy as np

        runtime = load_runtime(args.runtime)
        result.update({
            "runtime": {"name": runtime[0], "version": runtime[1]},
            "arch": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
            "python": platform.python_version(), "affinity": cpu_affinity(),
        })
        check_file(args.model, MAX_MODEL_BYTES, "model file")
        if args.sha256:
            actual = file_sha256(args.model)
            if actual != args.sha256.lower():
                raise RuntimeError(f"model sha256 mismatch: expected {args.sha256}, got {actual} (incomplete copy?)")
            result["model_sha256"] = actual
        handler = {"timing": mode_timing, "memory": mode_memory, "outputs": mode_outputs, "adaptive": mode_adaptive,
                   "ops": mode_ops}[args.mode]
        result.update(handler(args, np, runtime))
        result["ok"] = True
    except Exception as exc:  # report, never a traceback: the caller turns this into one clear line
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.update({"ok": False, "error": f"{type(exc).__name__}: {first_line}"})
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
