#!/usr/bin/env python3
"""engine_peer: the engine's peer check against Hugging Face transformers (issue 3).

Runs on the GPU machine (PyTorch + transformers). It
  1. builds small random Qwen2 models (tied/untied, fp32/bf16/fp16 storage, GQA/MHA/MQA,
     one sharded) and a reward model, saves them with save_pretrained, and records
     reference log-probs (right- and left-padded batches), the loss, every parameter's
     gradient, greedy continuations and reward scores -- all computed in float64 with
     eager attention, so the references carry no float32 noise of their own;
  2. rebuilds a checkpoint with Qwen2.5-0.5B's exact config from the engine's Philox rule
     (qwen2_init_philox, re-implemented here in torch) and records its log-probs on a
     few sequences; the weights are not stored, the C test rebuilds them;
  3. computes one linear layer, forward and backward, with microxcaling-style MX fake
     quantization (mxfp8_e4m3, block 32, round-to-nearest-even, OCP floor scale) in
     float64 on every operand, for the C backend's MX matmul to match;
  4. checks directories the C engine wrote (--ours DIR): each loads in transformers, its
     log-probs match the engine's own numbers, Philox weights agree bit for bit with
     this script's rebuild, and re-saved fixtures give outputs identical to the originals.

Writes to --out: engine_peer_results.json (every comparison, versions, the device) and
fixtures.tar.gz (to unpack into tests/fixtures/model/).

Philox rule (util/rng.h, model/qwen2.h): Philox4x32-10 with key (seed lo, seed hi) and
counter (i/4 lo, i/4 hi, stream lo, stream hi), word i%4; stream = rng_stream(name, 0)
(FNV-1a of the name, splitmix64 finaliser); u = (word >> 8) * 2^-24; t = 2u - 1;
value = 1 + t*0.1 for names ending "norm.weight", t*range otherwise, all in float32.
"""
import argparse
import io
import json
import os
import platform
import sys
import tarfile
import time

import numpy as np
import torch

M64 = (1 << 64) - 1
M32 = 0xFFFFFFFF


# ---- Philox, exactly as src/util/rng.c ------------------------------------------------------

def rng_stream(name, n):
    h = 0xCBF29CE484222325
    for ch in name.encode():
        h ^= ch
        h = (h * 0x100000001B3) & M64
    z = (h + n * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _mulhilo(a, b):
    """(hi, lo) 32-bit halves of a*b for int64 tensors holding uint32 a and a constant b,
    through 16-bit limbs so no intermediate overflows int64."""
    a_lo, a_hi = a & 0xFFFF, a >> 16
    b_lo, b_hi = b & 0xFFFF, b >> 16
    p_ll, p_lh, p_hl, p_hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (p_ll >> 16) + (p_lh & 0xFFFF) + (p_hl & 0xFFFF)
    lo = ((mid & 0xFFFF) << 16) | (p_ll & 0xFFFF)
    hi = p_hh + (p_lh >> 16) + (p_hl >> 16) + (mid >> 16)
    return hi & M32, lo & M32


def rng_u32(seed, stream, n, device):
    """words rng_u32(seed, stream, i) for i < n, as an int64 tensor"""
    nblk = (n + 3) // 4
    blk = torch.arange(nblk, dtype=torch.int64, device=device)
    c0, c1 = blk & M32, blk >> 32
    c2 = torch.full_like(blk, stream & M32)
    c3 = torch.full_like(blk, (stream >> 32) & M32)
    k0, k1 = seed & M32, (seed >> 32) & M32
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, 0xD2511F53)
        hi1, lo1 = _mulhilo(c2, 0xCD9E8D57)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return torch.stack((c0, c1, c2, c3), -1).reshape(-1)[:n]


def philox_tensor(name, shape, seed, rng_range, device):
    n = int(np.prod(shape))
    w = rng_u32(seed, rng_stream(name, 0), n, device)
    u = (w >> 8).to(torch.float32) * (2.0 ** -24)
    t = 2.0 * u - 1.0
    if name.endswith("norm.weight"):
        v = 1.0 + t * torch.tensor(0.1, dtype=torch.float32, device=device)
    else:
        v = t * torch.tensor(rng_range, dtype=torch.float32, device=device)
    return v.reshape(shape)


def philox_state_dict(model, seed, rng_range, device):
    sd = {}
    for name, p in model.state_dict().items():
        sd[name] = philox_tensor(name, tuple(p.shape), seed, rng_range, device)
    return sd


# ---- MX fake quant (microxcaling semantics, OCP floor scale) ---------------------------------

def mx_fake_quant(x, axis, block=32, ebits=4, mbits=3, emax=8, max_normal=448.0):
    """mxfp8_e4m3 by default: blocks of `block` along `axis` of a 2-D float64 tensor share
    the scale 2^(floor(log2 amax) - emax); elements rounded to nearest even with
    subnormals, saturated to max_normal."""
    xt = x.transpose(0, 1) if axis == 0 else x
    R, C = xt.shape
    nb = (C + block - 1) // block
    xp = torch.nn.functional.pad(xt, (0, nb * block - C)).reshape(R, nb, block)
    amax = xp.abs().amax(-1, keepdim=True)
    _, ex = torch.frexp(amax)                      # amax = m * 2^ex, m in [0.5, 1)
    s = (ex.to(torch.float64) - 1 - emax).clamp(-127, 127)
    scale = torch.pow(2.0, s)
    v = xp / scale
    emin = 2 - (1 << (ebits - 1))
    _, ve = torch.frexp(v.abs())
    e = (ve.to(torch.float64) - 1).clamp(min=emin)
    q = torch.pow(2.0, e - mbits)
    r = (torch.round(v / q) * q).clamp(-max_normal, max_normal)
    out = torch.where(amax > 0, r * scale, torch.zeros_like(r))
    out = out.reshape(R, nb * block)[:, :C]
    return out.transpose(0, 1) if axis == 0 else out


# ---- helpers ------------------------------------------------------------------------------------

def load_model(cls, path, dtype=torch.float64, device="cpu"):
    try:
        m = cls.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    except TypeError:
        m = cls.from_pretrained(path, torch_dtype=dtype, attn_implementation="eager")
    return m.to(device=device, dtype=dtype).eval()


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def next_token_logprobs(model, ids, mask):
    """log p(ids[b, t+1] | ids[b, ..t]) for every pair of real tokens, (B, T-1), with a
    validity mask. Each row runs alone without its padding: transformers' eager attention
    turns the fully masked queries of a left-padded batch into NaN that reaches the real
    tokens (5.x), and a row alone is exactly the engine's padding semantics (positions
    from the first real token, padding never attended)."""
    B, T = ids.shape
    valid = torch.zeros(B, T - 1, dtype=torch.bool, device=ids.device)
    rows = []
    for b in range(B):
        real = mask[b].nonzero()[:, 0]
        p0, n = int(real[0]), int(real.numel())
        seg = ids[b, p0:p0 + n][None]
        lp = model(input_ids=seg).logits[0].log_softmax(-1)
        v = lp[:-1].gather(-1, seg[0, 1:, None])[:, 0]          # n - 1 values
        valid[b, p0:p0 + n - 1] = True
        zeros = lambda k: torch.zeros(k, dtype=v.dtype, device=v.device)  # noqa: E731
        rows.append(torch.cat([zeros(p0), v, zeros(T - 1 - p0 - (n - 1))]))
    g = torch.stack(rows)
    return g, valid


def as_lists(g, valid):
    return [[float(g[b, t]) if valid[b, t] else None for t in range(g.shape[1])]
            for b in range(g.shape[0])]


def tiny_config(transformers, **kw):
    base = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=160,
                max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6,
                tie_word_embeddings=True, initializer_range=0.08, bos_token_id=None,
                eos_token_id=None, pad_token_id=None, use_sliding_window=False)
    base.update(kw)
    return transformers.Qwen2Config(**base)


def batch_ids(B, T, V, salt):
    return torch.tensor([[(b * 131 + t * 37 + salt) % V for t in range(T)] for b in range(B)])


FIXTURES = [
    # name, config overrides, storage dtype, shard size
    ("tiny_tied_gqa_f32", dict(), torch.float32, None),
    ("tiny_untied_mha_bf16", dict(tie_word_embeddings=False, num_key_value_heads=4,
                                  rope_theta=1000000.0), torch.bfloat16, None),
    ("tiny_untied_mqa_f16_sharded", dict(tie_word_embeddings=False, num_key_value_heads=1,
                                         num_hidden_layers=3), torch.float16, "100KB"),
]


def make_fixtures(transformers, root, res, device):
    from safetensors.torch import save_file
    for idx, (name, over, dtype, shard) in enumerate(FIXTURES):
        torch.manual_seed(1000 + idx)
        cfg = tiny_config(transformers, **over)
        model = transformers.Qwen2ForCausalLM(cfg).to(torch.float32)
        with torch.no_grad():  # norms away from 1 so their gradients matter
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.add_(torch.rand_like(p) * 0.2 - 0.1)
                elif n.endswith("bias"):
                    p.normal_(0, 0.05)
        path = os.path.join(root, name)
        model.to(dtype).save_pretrained(path, max_shard_size=shard) if shard else \
            model.to(dtype).save_pretrained(path)
        ref = load_model(transformers.Qwen2ForCausalLM, path, torch.float64, device)
        V, T = cfg.vocab_size, 12
        ids = batch_ids(2, T, V, 11 + idx).to(device)
        right = torch.ones(2, T, dtype=torch.long, device=device)
        right[1, 9:] = 0
        left = torch.ones(2, T, dtype=torch.long, device=device)
        left[1, :4] = 0
        out = {"generator": "scripts/peer/engine_peer.py", "storage": str(dtype).split(".")[-1],
               "batches": {}}
        for bname, mask in (("right", right), ("left", left)):
            ref.zero_grad()
            g, valid = next_token_logprobs(ref, ids, mask)
            loss = -(g[valid]).mean()
            entry = {"ids": ids.tolist(), "mask": mask.tolist(),
                     "next_token_logprobs": as_lists(g.detach(), valid), "loss": float(loss)}
            if bname == "right":
                loss.backward()
                grads = {n: p.grad.detach().to(torch.float32).cpu().contiguous()
                         for n, p in ref.named_parameters()}
                save_file(grads, os.path.join(path, "grads.safetensors"), metadata={"format": "pt"})
                entry["grads"] = "grads.safetensors"
            out["batches"][bname] = entry
        # greedy continuations (transformers' generate, each prompt alone; the engine runs
        # them as one left-padded batch)
        prompts = [[5, 17, 29, 41, 53], [7, 9, 11]]
        new_ids = []
        for p in prompts:
            with torch.no_grad():
                gen = ref.generate(input_ids=torch.tensor([p], device=device), max_new_tokens=6,
                                   do_sample=False, pad_token_id=0, eos_token_id=None)
            new_ids.append(gen[0, len(p):].tolist())
        out["greedy"] = {"prompts": prompts, "max_new": 6, "new_ids": new_ids}
        with open(os.path.join(path, "ref.json"), "w") as f:
            json.dump(out, f, indent=1)
        res["fixtures"][name] = {"saved": sorted(os.listdir(path)),
                                 "loss_right": out["batches"]["right"]["loss"]}

    # reward model: Qwen2ForSequenceClassification, one label, scores at the last real token
    torch.manual_seed(2000)
    cfg = tiny_config(transformers, pad_token_id=159, num_labels=1)
    rm = transformers.Qwen2ForSequenceClassification(cfg).to(torch.float32)
    path = os.path.join(root, "tiny_reward")
    rm.save_pretrained(path)
    ref = load_model(transformers.Qwen2ForSequenceClassification, path, torch.float64, device)
    ids = batch_ids(3, 10, 159, 3).to(device)
    mask = torch.ones(3, 10, dtype=torch.long, device=device)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, 159))
    with torch.no_grad():
        scores = ref(input_ids=ids, attention_mask=mask).logits[:, 0]
    with open(os.path.join(path, "ref.json"), "w") as f:
        json.dump({"generator": "scripts/peer/engine_peer.py", "pad_token_id": 159,
                   "ids": ids.tolist(), "mask": mask.tolist(), "scores": scores.tolist()}, f,
                  indent=1)
    res["fixtures"]["tiny_reward"] = {"scores": scores.tolist()}


QWEN05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
               num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
               max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
               tie_word_embeddings=True, use_sliding_window=False, bos_token_id=151643,
               eos_token_id=151643)
PHILOX_SEED, PHILOX_RANGE = 20240605, 0.08


def make_qwen05b(transformers, root, res, device):
    cfg = transformers.Qwen2Config(**QWEN05B)
    cfg._attn_implementation = "eager"
    with torch.device(device):
        model = transformers.Qwen2ForCausalLM(cfg)
    names = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    sd = {n: philox_tensor(n, s, PHILOX_SEED, PHILOX_RANGE, device) for n, s in names.items()
          if n != "lm_head.weight"}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    tied_ok = torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    seqs = [[(s * 7919 + t * 104729 + 17) % 151936 for t in range(16)] for s in range(3)]
    ids = torch.tensor(seqs, device=device)
    mask = torch.ones_like(ids)
    out = {}
    for dt in (torch.float64, torch.float32):
        m = model.to(dt).eval()
        with torch.no_grad():
            g, valid = next_token_logprobs(m, ids, mask)
        out[str(dt).split(".")[-1]] = g.cpu().to(torch.float64)
    diff32 = float((out["float32"] - out["float64"]).abs().max())
    ref = {"generator": "scripts/peer/engine_peer.py", "config": QWEN05B,
           "philox": {"seed": PHILOX_SEED, "range": PHILOX_RANGE}, "ids": seqs,
           "next_token_logprobs": out["float64"].tolist(),
           "transformers_fp32_vs_fp64_max_abs": diff32,
           "missing_on_load": list(missing), "unexpected_on_load": list(unexpected),
           "lm_head_tied": tied_ok}
    with open(os.path.join(root, "qwen05b_philox.json"), "w") as f:
        json.dump(ref, f, indent=1)
    res["qwen05b"] = {"fp32_vs_fp64_max_abs": diff32, "missing": list(missing),
                      "mean_logprob": float(out["float64"].mean())}


MX_FORMATS = {
    # file, spec text, (ebits, mbits, emax, max_normal)
    "mxfp8_e4m3": ("mx_linear.safetensors", "mxfp8_e4m3/32/even/floor", (4, 3, 8, 448.0)),
    "mxfp4_e2m1": ("mx_linear_fp4.safetensors", "mxfp4_e2m1/32/even/floor", (2, 1, 2, 6.0)),
}


def make_mx_linear(root, res):
    from safetensors.torch import save_file
    for fmt, (fname, spec, (eb, mb, emax, mxn)) in MX_FORMATS.items():
        g = torch.Generator().manual_seed(3000)
        M, N, K = 40, 48, 72   # 72 and 40 are not multiples of 32: short last blocks
        x = (torch.randn(M, K, generator=g) * 2.0).to(torch.float32)
        w = (torch.randn(N, K, generator=g) * 0.1).to(torch.float32)
        b = (torch.randn(N, generator=g) * 0.1).to(torch.float32)
        dy = (torch.randn(M, N, generator=g) * 0.01).to(torch.float32)
        x[3, :] *= 1e-3                 # blocks with very different scales
        w[:, 5] = 0.0

        def q(t, axis):
            return mx_fake_quant(t, axis, 32, eb, mb, emax, mxn)
        X, W, Bb, DY = (t.to(torch.float64) for t in (x, w, b, dy))
        y = q(X, 1) @ q(W, 1).T + Bb                   # along K
        dx = q(DY, 1) @ q(W, 0)                        # along N
        dw = q(DY, 0).T @ q(X, 0)                      # along M
        t = {"x": x, "w": w, "b": b, "dy": dy,
             "x_q_rows": q(X, 1), "w_q_rows": q(W, 1), "w_q_cols": q(W, 0),
             "dy_q_rows": q(DY, 1), "dy_q_cols": q(DY, 0), "x_q_cols": q(X, 0),
             "y": y, "dx": dx, "dw": dw}
        t = {k: v.to(torch.float32).contiguous() for k, v in t.items()}
        save_file(t, os.path.join(root, fname),
                  metadata={"format": "pt", "spec": spec, "generator": "scripts/peer/engine_peer.py"})
        res.setdefault("mx_linear", {})[fmt] = {"file": fname, "M": M, "N": N, "K": K,
                                                "y_absmax": float(y.abs().max())}


def check_ours(transformers, ours, fixtures_root, res, device):
    """Directories the C engine wrote, each with ours.json beside it."""
    out = {}
    for name in sorted(os.listdir(ours)):
        path = os.path.join(ours, name)
        meta_path = os.path.join(path, "ours.json")
        if not os.path.isfile(meta_path):
            continue
        meta = json.load(open(meta_path))
        r = {}
        try:
            if meta.get("class") == "Qwen2ForSequenceClassification":
                model = load_model(transformers.Qwen2ForSequenceClassification, path,
                                   torch.float64, device)
                ids = torch.tensor(meta["ids"], device=device)
                mask = torch.tensor(meta["mask"], device=device)
                with torch.no_grad():
                    sc = model(input_ids=ids, attention_mask=mask).logits[:, 0]
                r["scores_max_abs_vs_engine"] = float(
                    (sc - torch.tensor(meta["scores"], dtype=torch.float64, device=device)).abs().max())
                r["loaded"] = True
                out[name] = r
                continue
            model = load_model(transformers.Qwen2ForCausalLM, path, torch.float64, device)
            ids = torch.tensor(meta["ids"], device=device)
            mask = torch.tensor(meta["mask"], device=device)
            with torch.no_grad():
                g, valid = next_token_logprobs(model, ids, mask)
            if "next_token_logprobs" in meta:
                c = torch.tensor([[v if v is not None else 0.0 for v in row]
                                  for row in meta["next_token_logprobs"]], dtype=torch.float64,
                                 device=device)
                r["logprobs_max_abs_vs_engine"] = float((c - g)[valid].abs().max())
            if "philox" in meta:
                p = meta["philox"]
                tied = model.config.tie_word_embeddings
                bad = []
                for n, t in model.state_dict().items():
                    if n == "lm_head.weight" and tied:
                        continue  # the embedding, checked under its own name
                    want = philox_tensor(n, tuple(t.shape), p["seed"], p["range"], device)
                    if not torch.equal(want.to(torch.float64), t):
                        bad.append(n)
                r["philox_mismatched_tensors"] = bad[:10]
                r["philox_bitwise_equal"] = not bad
            if "same_as" in meta:
                orig = load_model(transformers.Qwen2ForCausalLM,
                                  os.path.join(fixtures_root, meta["same_as"]), torch.float64, device)
                with torch.no_grad():
                    a = model(input_ids=ids).logits
                    b = orig(input_ids=ids).logits
                r["logits_max_abs_vs_original"] = float((a - b).abs().max())
                sa, sb = model.state_dict(), orig.state_dict()
                r["state_dict_equal"] = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
            r["loaded"] = True
        except Exception as ex:  # report, keep checking the others
            r["loaded"] = False
            r["error"] = f"{type(ex).__name__}: {ex}"
        out[name] = r
    res["ours"] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="where results and fixtures go")
    ap.add_argument("--ours", help="directories written by the C engine, to check")
    ap.add_argument("--fixtures", help="existing fixtures (for --ours same_as checks)")
    ap.add_argument("--skip", default="", help="comma list: fixtures,qwen05b,mx")
    a = ap.parse_args()
    import transformers
    t0 = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    res = {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "numpy": np.__version__},
           "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
           "fixtures": {}}
    print(json.dumps(res["versions"]), res["device"], flush=True)
    root = os.path.join(a.out, "fixtures")
    os.makedirs(root, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    steps = [("fixtures", lambda: make_fixtures(transformers, root, res, device)),
             ("mx", lambda: make_mx_linear(root, res)),
             ("qwen05b", lambda: make_qwen05b(transformers, root, res, device))]
    if a.ours:
        steps.append(("ours", lambda: check_ours(transformers, a.ours, a.fixtures or root, res, device)))
    for name, fn in steps:
        if name in skip:
            continue
        t = time.time()
        try:
            fn()
            res.setdefault("steps", {})[name] = {"ok": True, "s": round(time.time() - t, 1)}
        except Exception as ex:
            import traceback
            traceback.print_exc()
            res.setdefault("steps", {})[name] = {"ok": False, "error": f"{type(ex).__name__}: {ex}"}
        print(name, json.dumps(res["steps"][name]), flush=True)
    res["seconds"] = round(time.time() - t0, 1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(root, arcname="fixtures")
    with open(os.path.join(a.out, "fixtures.tar.gz"), "wb") as f:
        f.write(buf.getvalue())
    import shutil
    shutil.rmtree(root)
    with open(os.path.join(a.out, "engine_peer_results.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.exit(main())
