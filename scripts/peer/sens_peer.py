#!/usr/bin/env python3
"""sens_peer: the sensitivity profiler's peer check in PyTorch (issue 8).

Loads a small Qwen2 fixture (tests/fixtures/model/tiny_tied_gqa_f32) with transformers in
float64, and for two layers -- model.layers.1.mlp.down_proj and the tied lm_head --
quantizes that layer alone, weight and input, with microxcaling-style MX fake quant in
each of the six formats and three block sizes, and computes the perplexity of fixed token
ids: exp(mean NLL over every next-token prediction), each row run alone. Writes
sens_peer.json (the ids, the baseline, one perplexity per (layer, format, block), the
versions and device) for tests/test_sens.c to compare with `mxrlhf sensitivity`'s cells.

Fake quant (the engine's rule, src/mx/mx.h; docs/mx.md): blocks of `block` consecutive
values along the GEMM's reduction axis K (the last axis of the input x (tokens, K) and of
the weight W (N, K)) share the scale 2^s, s = floor(log2 amax) - emax (OCP floor rule,
clamped to [-127, 127]); each element v = x / 2^s is rounded half-to-even to the element
grid (exponent e = max(floor(log2 |v|), emin), step 2^(e - mbits), subnormals kept) and
saturated to the largest normal; an all-zero block stays zero. mxint8 is the same rule
with emin = emax = 0 and 6 fraction bits (multiples of 1/64 up to 127/64). A tied lm_head
quantizes only its own GEMM's operands: the embedding lookup stays unquantized.

Usage: python3 scripts/peer/sens_peer.py --fixtures tests/fixtures/model --out DIR
"""
import argparse
import json
import os
import platform
import sys
import time

import torch

# name -> (emin, mbits, emax, largest normal); emin = 2 - 2^(ebits-1)
FORMATS = {
    "mxfp8_e4m3": (-6, 3, 8, 448.0),
    "mxfp8_e5m2": (-14, 2, 15, 57344.0),
    "mxfp6_e3m2": (-2, 2, 4, 28.0),
    "mxfp6_e2m3": (0, 3, 2, 7.5),
    "mxfp4_e2m1": (0, 1, 2, 6.0),
    "mxint8": (0, 6, 0, 127.0 / 64.0),
}
BLOCKS = (8, 16, 32)
LAYERS = ("model.layers.1.mlp.down_proj", "lm_head")
MODEL = "tiny_tied_gqa_f32"


def fake_quant(x, block, fmt):
    """MX quantize-dequantize of x (float64) in blocks along its last axis."""
    emin, mbits, emax, maxn = FORMATS[fmt]
    shape = x.shape
    K = shape[-1]
    xr = x.reshape(-1, K)
    nb = (K + block - 1) // block
    xp = torch.nn.functional.pad(xr, (0, nb * block - K)).reshape(xr.shape[0], nb, block)
    amax = xp.abs().amax(-1, keepdim=True)
    _, ex = torch.frexp(amax)                      # amax = m * 2^ex, m in [0.5, 1)
    s = (ex.to(torch.float64) - 1 - emax).clamp(-127, 127)
    scale = torch.pow(2.0, s)
    v = xp / scale
    _, ve = torch.frexp(v.abs())
    e = (ve.to(torch.float64) - 1).clamp(min=emin)
    q = torch.pow(2.0, e - mbits)
    r = (torch.round(v / q) * q).clamp(-maxn, maxn)
    out = torch.where(amax > 0, r * scale, torch.zeros_like(r))
    return out.reshape(xr.shape[0], nb * block)[:, :K].reshape(shape)


def token_rows():
    """Three fixed rows of ids in [0, 160) (a 31-bit LCG), lengths 24, 20, 16."""
    x, rows = 20240605, []
    for n in (24, 20, 16):
        row = []
        for _ in range(n):
            x = (1103515245 * x + 12345) % (1 << 31)
            row.append((x >> 16) % 160)
        rows.append(row)
    return rows


def perplexity(model, rows, device):
    nll, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row], dtype=torch.long, device=device)
            lp = model(input_ids=ids).logits[0].log_softmax(-1)
            nll -= float(lp[:-1].gather(-1, ids[0, 1:, None]).sum())
            count += len(row) - 1
    return float(torch.exp(torch.tensor(nll / count, dtype=torch.float64))), nll, count


def quantize_layer(lin, fmt, block):
    def forward(x):
        return torch.nn.functional.linear(fake_quant(x, block, fmt),
                                          fake_quant(lin.weight, block, fmt), lin.bias)
    lin.forward = forward


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="tests/fixtures/model")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import transformers
    print("python", platform.python_version(), "torch", torch.__version__, "transformers",
          transformers.__version__, flush=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dev_name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor()
    print("device", device, dev_name, flush=True)
    path = os.path.join(a.fixtures, MODEL)
    try:
        model = transformers.Qwen2ForCausalLM.from_pretrained(
            path, dtype=torch.float64, attn_implementation="eager")
    except TypeError:
        model = transformers.Qwen2ForCausalLM.from_pretrained(
            path, torch_dtype=torch.float64, attn_implementation="eager")
    model = model.to(device=device, dtype=torch.float64).eval()
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    print("lm_head tied to the embedding:", tied, flush=True)
    rows = token_rows()
    t0 = time.time()
    base, base_nll, count = perplexity(model, rows, device)
    print("baseline ppl", base, "tokens", count, flush=True)
    res = {"model": MODEL, "lm_head_tied": tied, "ids": rows, "score": "all", "tokens": count,
           "baseline_ppl": base, "baseline_nll": base_nll, "rows": {}}
    modules = dict(model.named_modules())
    for name in LAYERS:
        lin = modules[name]
        cells = {}
        for fmt in FORMATS:
            for block in BLOCKS:
                quantize_layer(lin, fmt, block)
                p, _, _ = perplexity(model, rows, device)
                del lin.forward
                cells[f"{fmt}/{block}"] = p
                print(f"{name} {fmt}/{block}: ppl {p:.10f} ({100 * (p - base) / base:+.4f}%)",
                      flush=True)
        res["rows"][name] = cells
    # sanity: the patches are gone (recorded, not asserted: a rerun costs a device call)
    again, _, _ = perplexity(model, rows, device)
    res["baseline_again"] = again
    res["reference"] = ("float64, eager attention, each row alone; fake quant as in "
                        "scripts/peer/sens_peer.py (rounding half-to-even, OCP floor scale)")
    res["versions"] = {"python": platform.python_version(), "torch": torch.__version__,
                       "transformers": transformers.__version__}
    res["device"] = dev_name
    res["seconds"] = time.time() - t0
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "sens_peer.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", os.path.join(a.out, "sens_peer.json"), flush=True)


if __name__ == "__main__":
    sys.exit(main())
