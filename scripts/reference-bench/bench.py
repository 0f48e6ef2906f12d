#!/usr/bin/env python3
"""Reference timings of the official EfficientViT-SAM (and of SAM's original ViT image encoders) on
this machine, for `evsam bench`.

For each model: build the official model (PyPI `efficientsam`) with seeded random weights and
non-trivial BatchNorm statistics, save them as <out>/<model>.pt (so `evsam bench` runs the very
same weights), then time in PyTorch eager:
  - the image encoder (warm-up, then --runs runs: median and min),
  - prompt encoder + mask decoder + upscaling for one point (multimask), one box (single mask) and
    a batch of 64 single-point prompts (multimask, logits at the original size),
  - everything mode (SamAutomaticMaskGenerator defaults: 32×32 points, batches of 64),
  - peak resident memory after the encoder runs;
and the image encoder exported to ONNX in ONNX Runtime (CPU, all graph optimisations);
and that same ONNX file in OpenVINO (CPU, --threads inference threads, the LATENCY performance
hint), twice: "openvino-fp32" with INFERENCE_PRECISION_HINT f32, and "openvino" at OpenVINO's
default precision for this CPU (bf16 where the CPU has AVX512_BF16 or AMX). Each OpenVINO entry
gives the encoder time on the input ONNX Runtime gets, peak memory after the encoder runs, the
precision the compiled model reports ("precision": "f32", "bf16", …) and the relative L2 distance
of its embedding to PyTorch's on the same input ("embedding_rel_l2"). --skip-openvino leaves
them out (as --skip-onnx does ONNX Runtime). The export step saves that input and PyTorch's
embedding as <out>/<model>-encoder-reference.npz, so the OpenVINO processes never import torch.

PyTorch, ONNX Runtime and each OpenVINO precision run in a process of their own, so peak memory
is theirs alone. Inputs match `evsam bench`: the same synthetic 600×400 image (or --image), the
same prompts. Writes <out>/reference.json.

SAM's original ViT image encoders (PyPI `segment-anything`, models sam-vit-b, sam-vit-l,
sam-vit-h) are timed the same way in PyTorch eager: built by sam_model_registry["vit_b"|"vit_l"|
"vit_h"] with seeded random weights (saved as <out>/<model>.pt, segment-anything's own state-dict
format), the bench image preprocessed as SamPredictor.set_image does it (ResizeLongestSide(1024)
on uint8, then Sam.preprocess: normalise on the 0–255 scale, pad to 1024×1024), and
image_encoder(input) timed alone; the decoder cases and everything mode run SAM's own
SamPredictor and SamAutomaticMaskGenerator (on the embedding the encoder timing computed). No ONNX
Runtime or OpenVINO for them: ViT-H's weights (2.5 GB) exceed ONNX's 2 GB protobuf limit, so
all three are skipped and their entry in reference.json says so ("onnxruntime_skipped",
"openvino_skipped").

--train: the training step instead (train_step.py: the official trainer's step rebuilt on the
packaged model): per model a full step, an encoder-only distillation step and the decoder part
with the encoder frozen, --images images × --masks-per-image box prompts, multimask, each part in
its own process with its peak memory from the first step on. Writes <out>/reference-train.json
for `evsam bench-train --reference`.

--serve-train full|encoder|decoder --one MODEL: the same for one training step of that part
(`evsam bench-train --interleave`), with --images and --masks-per-image.

--serve pytorch|onnxruntime|openvino-fp32|openvino --one MODEL: an encoder server for `evsam
bench`'s interleaved timing. It loads the weights (and ONNX file; for OpenVINO the ONNX file and
the saved encoder input, without torch) a previous run saved in --out, warms up, prints
"evsam-bench ready" and then answers each "run" line on stdin with "evsam-bench time SECONDS"
(one encoder pass) until "quit" or end of input, then "evsam-bench peak_rss_mb MB". `evsam bench`
alternates such servers with its own run by run, so that a machine whose speed drifts over minutes
slows every side alike. For sam-vit-b/l/h only --serve pytorch exists (no ONNX, see above); their
saved weights are memory-mapped rather than copied, so the peak memory is the model's once.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def synthetic_image(width=600, height=400):
    """The picture `evsam bench` draws (BenchCommand.swift, syntheticImage): colour ramps, discs."""
    ys, xs = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (xs * 255) // max(1, width - 1)
    img[..., 1] = (ys * 255) // max(1, height - 1)
    img[..., 2] = 128
    discs = [
        (width // 4, height // 3, height // 6, (220, 40, 40)),
        (width * 2 // 3, height // 2, height // 4, (40, 200, 60)),
        (width // 2, height * 4 // 5, height // 8, (30, 60, 220)),
    ]
    for cx, cy, r, c in discs:
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        img[inside] = c
    return img


def load_image(path):
    if path is None:
        return synthetic_image()
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# SAM's original ViT models (PyPI `segment-anything`): our name → sam_model_registry key.
SAM_VIT = {"sam-vit-b": "vit_b", "sam-vit-l": "vit_l", "sam-vit-h": "vit_h"}
SAM_ONNX_SKIPPED = (
    "not timed: SAM ViT-H's weights (2.5 GB) exceed ONNX's 2 GB protobuf limit, so ONNX Runtime is "
    "skipped for every SAM ViT model"
)


def build_sam_vit(name, seed):
    """SAM's original model (image encoder ImageEncoderViT), seeded random weights, float32."""
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(seed)
    return sam_model_registry[SAM_VIT[name]](checkpoint=None).float().eval()


def sam_encoder_input(model, image):
    """The image encoder's input exactly as SamPredictor.set_image makes it: ResizeLongestSide to
    the encoder's size on the uint8 picture, then Sam.preprocess (normalise on the 0–255 scale, pad
    to a square). Returns the input and the resized size (the predictor's input_size)."""
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(model.image_encoder.img_size).apply_image(image)
    pixels = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
    with torch.no_grad():
        return model.preprocess(pixels), tuple(pixels.shape[-2:])


def build_model(name, seed):
    import torch
    import torch.nn as nn

    if name in SAM_VIT:
        return build_sam_vit(name, seed)
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model

    torch.manual_seed(seed)
    model = create_efficientvit_sam_model(f"efficientvit-sam-{name}", pretrained=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def time_runs(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_pytorch(args):
    import torch
    from efficientsam.models.efficientvit.sam import (
        EfficientViTSamAutomaticMaskGenerator,
        EfficientViTSamPredictor,
    )

    torch.set_num_threads(args.threads)
    if args.one in SAM_VIT:
        return run_pytorch_sam(args)
    model = build_model(args.one, args.seed)
    torch.save(model.state_dict(), os.path.join(args.out, f"{args.one}.pt"))
    image = load_image(args.image)
    h, w = image.shape[:2]
    x = model.transform(image).unsqueeze(0)
    result = {"model": args.one, "threads": args.threads, "torch": torch.__version__}

    with torch.inference_mode():
        enc = time_runs(lambda: model.image_encoder(x), args.runs)
    result["encoder_s"] = summary(enc)
    result["peak_rss_after_encode_mb"] = peak_rss_mb()

    predictor = EfficientViTSamPredictor(model)
    predictor.set_image(image)
    point = np.array([[w * 0.45, h * 0.55]])
    box = np.array([w * 0.2, h * 0.25, w * 0.7, h * 0.8])
    grid = np.array(
        [[[((i % 8) + 0.5) * w / 8, ((i // 8) + 0.5) * h / 8]] for i in range(64)], dtype=np.float64
    )
    coords = torch.as_tensor(predictor.apply_coords(grid), dtype=torch.float)
    labels = torch.ones((64, 1), dtype=torch.int)

    def one_point():
        predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)

    def one_box():
        predictor.predict(box=box, multimask_output=False)

    def batch64():
        predictor.predict_torch(coords, labels, multimask_output=True, return_logits=True)

    result["decoder_point_ms"] = summary([t * 1000 for t in time_runs(one_point, args.decoder_runs)])
    result["decoder_box_ms"] = summary([t * 1000 for t in time_runs(one_box, args.decoder_runs)])
    result["decoder_batch64_ms"] = summary(
        [t * 1000 for t in time_runs(batch64, max(3, args.decoder_runs // 4))]
    )

    if not args.skip_everything:
        generator = EfficientViTSamAutomaticMaskGenerator(model)
        start = time.perf_counter()
        masks = generator.generate(image)
        result["everything_s"] = time.perf_counter() - start
        result["everything_masks"] = len(masks)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run_pytorch_sam(args):
    """run_pytorch for SAM's ViT models, with segment-anything's own predictor and generator:
    the same cases, the same prompts, the same result fields."""
    from importlib.metadata import version

    import torch
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor

    model = build_model(args.one, args.seed)
    torch.save(model.state_dict(), os.path.join(args.out, f"{args.one}.pt"))
    image = load_image(args.image)
    h, w = image.shape[:2]
    x, input_size = sam_encoder_input(model, image)
    result = {
        "model": args.one, "threads": args.threads, "torch": torch.__version__,
        "segment_anything": version("segment-anything"),
    }

    last = {}

    def encode():
        last["features"] = model.image_encoder(x)

    with torch.inference_mode():
        enc = time_runs(encode, args.runs)
    result["encoder_s"] = summary(enc)
    result["peak_rss_after_encode_mb"] = peak_rss_mb()

    # SamPredictor.set_torch_image's state, from the embedding just timed (set_image would encode
    # once more: ViT-H's ~45 s for nothing).
    predictor = SamPredictor(model)
    predictor.reset_image()
    predictor.original_size = (h, w)
    predictor.input_size = input_size
    predictor.features = last.pop("features")
    predictor.is_image_set = True
    point = np.array([[w * 0.45, h * 0.55]])
    box = np.array([w * 0.2, h * 0.25, w * 0.7, h * 0.8])
    grid = np.array(
        [[[((i % 8) + 0.5) * w / 8, ((i // 8) + 0.5) * h / 8]] for i in range(64)], dtype=np.float64
    )
    coords = torch.as_tensor(predictor.transform.apply_coords(grid, (h, w)), dtype=torch.float)
    labels = torch.ones((64, 1), dtype=torch.int)

    def one_point():
        predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)

    def one_box():
        predictor.predict(box=box, multimask_output=False)

    def batch64():
        predictor.predict_torch(coords, labels, multimask_output=True, return_logits=True)

    result["decoder_point_ms"] = summary([t * 1000 for t in time_runs(one_point, args.decoder_runs)])
    result["decoder_box_ms"] = summary([t * 1000 for t in time_runs(one_box, args.decoder_runs)])
    result["decoder_batch64_ms"] = summary(
        [t * 1000 for t in time_runs(batch64, max(3, args.decoder_runs // 4))]
    )

    if not args.skip_everything:
        generator = SamAutomaticMaskGenerator(model)
        start = time.perf_counter()
        masks = generator.generate(image)
        result["everything_s"] = time.perf_counter() - start
        result["everything_masks"] = len(masks)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def onnx_session(path, threads):
    """ONNX Runtime on the CPU with `threads` intra-op threads and every graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def export_encoder(args):
    """Builds the model, exports its image encoder to <out>/<model>-encoder.onnx; returns the
    model, the encoder's input for the bench image and the ONNX file's path."""
    import torch

    model = build_model(args.one, args.seed)
    image = load_image(args.image)
    x = model.transform(image).unsqueeze(0)
    path = os.path.join(args.out, f"{args.one}-encoder.onnx")
    with torch.inference_mode():
        try:
            torch.onnx.export(
                model.image_encoder, (x,), path, input_names=["image"], output_names=["embedding"],
                opset_version=17, dynamo=False,
            )
        except Exception as error:  # the TorchScript exporter may be gone: use the new one
            print(f"reference-bench: TorchScript ONNX export failed ({error}); trying dynamo", file=sys.stderr)
            torch.onnx.export(
                model.image_encoder, (x,), path, input_names=["image"], output_names=["embedding"],
                dynamo=True,
            )
    return model, x, path


# OpenVINO's runtimes as reference.json names them: runtime → INFERENCE_PRECISION_HINT set
# (None: OpenVINO's default for this CPU).
OPENVINO_RUNTIMES = {"openvino-fp32": "f32", "openvino": None}
OPENVINO_SKIPPED = (
    "not timed: OpenVINO runs the ONNX export, which the SAM ViT models do not have (see "
    "onnxruntime_skipped)"
)


def encoder_reference_path(out, name):
    return os.path.join(out, f"{name}-encoder-reference.npz")


def image_key(image):
    return os.path.abspath(image) if image else "synthetic 600x400"


def save_encoder_reference(args, model, x):
    """<out>/<model>-encoder-reference.npz: the encoder input the ONNX file is timed on, PyTorch's
    embedding of it, and the image and seed they come from, for the OpenVINO processes (which
    then need no torch: their peak memory stays OpenVINO's own)."""
    import torch

    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        embedding = model.image_encoder(x).numpy()
    np.savez(
        encoder_reference_path(args.out, args.one), input=x.numpy(), embedding=embedding,
        image=np.array(image_key(args.image)), seed=np.array(args.seed),
    )


def load_encoder_reference(args):
    """The ONNX file's path and the saved reference (see save_encoder_reference); exits with a
    clear message when a previous run did not leave them, or left them for another image."""
    path = os.path.join(args.out, f"{args.one}-encoder.onnx")
    reference = encoder_reference_path(args.out, args.one)
    for needed in (path, reference):
        if not os.path.exists(needed):
            sys.exit(
                f"reference-bench: {needed} missing: run the reference once without --serve "
                "(and without --skip-openvino) first"
            )
    with np.load(reference, allow_pickle=False) as f:
        saved = dict(f)
    if str(saved["image"]) != image_key(args.image) or int(saved["seed"]) != args.seed:
        sys.exit(
            f"reference-bench: {reference} is for image {saved['image']} and seed {saved['seed']}, "
            f"not {image_key(args.image)} and {args.seed}: run the reference again with these"
        )
    return path, saved


def openvino_model(path, threads, precision):
    """The ONNX file compiled by OpenVINO for the CPU: `threads` inference threads, the LATENCY
    performance hint and INFERENCE_PRECISION_HINT `precision` (None: OpenVINO's default)."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {
        props.inference_num_threads(): threads,
        hints.performance_mode(): hints.PerformanceMode.LATENCY,
    }
    if precision is not None:
        config[hints.inference_precision()] = getattr(ov.Type, precision)
    core = ov.Core()
    return core, core.compile_model(path, "CPU", config)


def run_openvino(args):
    import openvino as ov

    path, saved = load_encoder_reference(args)
    x = saved.pop("input")
    reference = saved.pop("embedding")
    core, compiled = openvino_model(path, args.threads, OPENVINO_RUNTIMES[args.mode])
    request = compiled.create_infer_request()
    feed = {0: x}
    last = {}

    def encode():
        last["embedding"] = request.infer(feed)[0]

    enc = time_runs(encode, args.runs)
    peak = peak_rss_mb()
    embedding = np.asarray(last["embedding"], dtype=np.float64)
    reference = reference.astype(np.float64)
    hint = compiled.get_property("PERFORMANCE_HINT")
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return {
        "model": args.one, "threads": args.threads, "openvino": ov.__version__,
        "device": core.get_property("CPU", "FULL_DEVICE_NAME"),
        "precision": getattr(precision, "get_type_name", lambda: str(precision))(),
        "inference_num_threads": compiled.get_property("INFERENCE_NUM_THREADS"),
        "performance_hint": getattr(hint, "name", str(hint)),
        "encoder_s": summary(enc), "peak_rss_after_encode_mb": peak,
        "embedding_rel_l2": float(np.linalg.norm(embedding - reference) / np.linalg.norm(reference)),
    }


def run_onnx_export(args):
    """Only the ONNX export and the OpenVINO reference, when ONNX Runtime is skipped."""
    import torch

    model, x, path = export_encoder(args)
    save_encoder_reference(args, model, x)
    return {"model": args.one, "onnx": path, "torch": torch.__version__}


def run_onnxruntime(args):
    import onnxruntime as ort

    model, x, path = export_encoder(args)
    if not args.skip_openvino:
        save_encoder_reference(args, model, x)
    # The exporting process is done; time in a fresh state so RSS is ONNX Runtime's own.
    del model
    session = onnx_session(path, args.threads)
    feed = {"image": x.numpy()}
    enc = time_runs(lambda: session.run(None, feed), args.runs)
    return {
        "model": args.one, "threads": args.threads, "onnxruntime": ort.__version__,
        "encoder_s": summary(enc),
    }


def serve(args):
    """One encoder pass per "run" request; see the module docstring."""
    import torch

    torch.set_num_threads(args.threads)
    image = load_image(args.image)
    weights = os.path.join(args.out, f"{args.one}.pt")
    if not os.path.exists(weights):
        sys.exit(f"reference-bench: {weights} missing: run the reference once without --serve first")
    if args.one in SAM_VIT:
        if args.serve != "pytorch":
            sys.exit(f"reference-bench: {args.one}: no ONNX Runtime server ({SAM_ONNX_SKIPPED})")
        model = build_model(args.one, args.seed)
        # Memory-mapped and assigned, not copied: ViT-H's 2.5 GB are resident once, not twice.
        model.load_state_dict(torch.load(weights, map_location="cpu", mmap=True), assign=True)
        model.eval()
        x, _ = sam_encoder_input(model, image)

        def encode():
            with torch.inference_mode():
                model.image_encoder(x)

        encode()
        answer_runs(encode, peak_rss_mb)
        return
    model = build_model(args.one, args.seed)
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    x = model.transform(image).unsqueeze(0)
    if args.serve == "pytorch":
        def encode():
            with torch.inference_mode():
                model.image_encoder(x)
    else:
        path = os.path.join(args.out, f"{args.one}-encoder.onnx")
        if not os.path.exists(path):
            sys.exit(f"reference-bench: {path} missing: run the reference once without --serve first")
        del model
        session = onnx_session(path, args.threads)
        feed = {"image": x.numpy()}

        def encode():
            session.run(None, feed)

    encode()
    answer_runs(encode, peak_rss_mb)


def serve_openvino(args):
    """serve() for OpenVINO: the ONNX file and encoder input a previous run saved, no torch."""
    if args.one in SAM_VIT:
        sys.exit(f"reference-bench: {args.one}: no OpenVINO server ({OPENVINO_SKIPPED})")
    path, saved = load_encoder_reference(args)
    _, compiled = openvino_model(path, args.threads, OPENVINO_RUNTIMES[args.serve])
    request = compiled.create_infer_request()
    feed = {0: saved["input"]}

    def encode():
        request.infer(feed)

    encode()
    answer_runs(encode, peak_rss_mb)


def answer_runs(work, peak):
    """The servers' protocol: "ready", then one timed `work()` per "run" line until "quit" or
    the end of input, then the peak memory `peak()` reports."""
    print("evsam-bench ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        if line.strip() == "run":
            start = time.perf_counter()
            work()
            print(f"evsam-bench time {time.perf_counter() - start:.6f}", flush=True)
    print(f"evsam-bench peak_rss_mb {peak():.1f}", flush=True)


def run_train_part(args):
    import torch

    import train_step

    torch.set_num_threads(args.threads)
    model = build_model(args.one, args.seed)
    part = args.mode.removeprefix("train-")
    result = train_step.run_part(
        model, part, args.images, args.masks_per_image, args.runs, args.warmup, args.seed
    )
    result["model"] = args.one
    return result


def serve_train(args):
    """One training step of --serve-train PART per "run" line, for `evsam bench-train
    --interleave`; the same protocol as `serve` (peak RSS counted from before the warm-up)."""
    import torch

    import train_step

    torch.set_num_threads(args.threads)
    model = build_model(args.one, args.seed)
    step = train_step.prepare_part(model, args.serve_train, args.images, args.masks_per_image, args.seed)
    train_step.reset_peak_rss()
    step()
    answer_runs(step, train_step.peak_rss_mb)


def train_document(args, models):
    document = {
        "tool": "scripts/reference-bench --train", "threads": args.threads, "runs": args.runs,
        "warmup": args.warmup, "machine": platform.processor() or platform.machine(), "train": {},
    }
    with open("/proc/loadavg") as f:
        document["load_average_at_start"] = f.read().split()[:3]
    for model in models:
        entry = {
            "images": args.images, "masks_per_image": args.masks_per_image, "prompts": "boxes",
            "multimask": True,
        }
        for part in args.parts.split(","):
            entry[part] = child(args, f"train-{part}", model)
        document["train"][model] = entry
    return document


def child(args, mode, model):
    out_file = os.path.join(args.out, f"{model}.{mode}.json")
    cmd = [
        sys.executable, os.path.abspath(__file__), "--one", model, "--mode", mode,
        "--threads", str(args.threads), "--runs", str(args.runs),
        "--decoder-runs", str(args.decoder_runs), "--out", args.out, "--seed", str(args.seed),
        "--images", str(args.images), "--masks-per-image", str(args.masks_per_image),
        "--warmup", str(args.warmup),
    ]
    if args.image:
        cmd += ["--image", args.image]
    if args.skip_everything:
        cmd.append("--skip-everything")
    if args.skip_openvino:
        cmd.append("--skip-openvino")
    print(f"reference-bench: {model} in {mode}…", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    with open(out_file) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default="l0",
        help="comma-separated: l0,l1,l2,xl0,xl1 and SAM's sam-vit-b,sam-vit-l,sam-vit-h")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decoder-runs", type=int, default=20)
    parser.add_argument("--image", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-everything", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--skip-openvino", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../.venv-ref/results"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument(
        "--serve", choices=["pytorch", "onnxruntime", *OPENVINO_RUNTIMES],
        help="encoder server (needs --one)")
    parser.add_argument("--train", action="store_true", help="time the training step (see above)")
    parser.add_argument(
        "--serve-train", choices=["full", "encoder", "decoder"],
        help="a training-step server for `evsam bench-train --interleave` (needs --one)")
    parser.add_argument("--parts", default="full,encoder,decoder", help="with --train: which parts")
    parser.add_argument("--images", type=int, default=2, help="with --train: images per step")
    parser.add_argument("--masks-per-image", type=int, default=16, help="with --train: box prompts per image")
    parser.add_argument("--warmup", type=int, default=1, help="with --train: untimed steps first")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    # Same thread count for every library torch or ONNX Runtime might bring.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    if args.serve_train:
        if not args.one:
            parser.error("--serve-train needs --one MODEL")
        if args.one in SAM_VIT:
            parser.error(f"--serve-train: {args.one} has no training step (EfficientViT-SAM only)")
        serve_train(args)
        return
    if args.serve:
        if not args.one:
            parser.error("--serve needs --one MODEL")
        if args.serve in OPENVINO_RUNTIMES:
            serve_openvino(args)
        else:
            serve(args)
        return
    if args.one:
        if args.mode.startswith("train-"):
            result = run_train_part(args)
        elif args.mode == "pytorch":
            result = run_pytorch(args)
        elif args.mode in OPENVINO_RUNTIMES:
            result = run_openvino(args)
        elif args.mode == "onnx-export":
            result = run_onnx_export(args)
        else:
            result = run_onnxruntime(args)
        with open(os.path.join(args.out, f"{args.one}.{args.mode}.json"), "w") as f:
            json.dump(result, f, indent=1)
        return

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.train:
        if any(m in SAM_VIT for m in models):
            parser.error("--train: the SAM ViT models have no training step (EfficientViT-SAM only)")
        path = os.path.join(args.out, "reference-train.json")
        with open(path, "w") as f:
            json.dump(train_document(args, models), f, indent=1)
        print(f"reference-bench: wrote {path}", file=sys.stderr)
        return

    document = {
        "tool": "scripts/reference-bench", "threads": args.threads, "runs": args.runs,
        "decoder_runs": args.decoder_runs, "image": args.image or "synthetic 600x400",
        "machine": platform.processor() or platform.machine(), "models": {},
    }
    with open("/proc/loadavg") as f:
        document["load_average_at_start"] = f.read().split()[:3]
    for model in models:
        entry = {"pytorch": child(args, "pytorch", model), "weights": os.path.join(args.out, f"{model}.pt")}
        if model in SAM_VIT:
            entry["onnxruntime_skipped"] = SAM_ONNX_SKIPPED
            entry["openvino_skipped"] = OPENVINO_SKIPPED
            if not args.skip_onnx:
                print(f"reference-bench: {model}: ONNX Runtime {SAM_ONNX_SKIPPED}", file=sys.stderr)
            if not args.skip_openvino:
                print(f"reference-bench: {model}: OpenVINO {OPENVINO_SKIPPED}", file=sys.stderr)
        else:
            if not args.skip_onnx:
                entry["onnxruntime"] = child(args, "onnxruntime", model)
            if not args.skip_openvino:
                if args.skip_onnx:  # the export the ONNX Runtime process would have made
                    child(args, "onnx-export", model)
                for runtime in OPENVINO_RUNTIMES:
                    entry[runtime] = child(args, runtime, model)
        document["models"][model] = entry
    path = os.path.join(args.out, "reference.json")
    with open(path, "w") as f:
        json.dump(document, f, indent=1)
    print(f"reference-bench: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
