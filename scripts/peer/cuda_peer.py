#!/usr/bin/env python3
"""cuda_peer: the PyTorch + transformers peer of bench/cuda_bench.c (issue 10).

Same card, same shapes, same call (scripts/peer/cuda_device.sh runs both):
  training  Qwen2ForCausalLM with Qwen2.5-0.5B's config (random init, float32 parameters),
            batch 8 x 1024 tokens, loss = model(ids, labels=ids).loss under
            torch.autocast(bfloat16), backward, clip_grad_norm_(1.0), AdamW (PyTorch's
            default implementation), zero_grad; eager; 2 warm-up steps, median of 5
  decoding  model.generate on 8 prompts of 128 random tokens, 128 new tokens, sampled
            (temperature 1, top_k 0, top_p 1, no EOS), under the same autocast; one short
            warm-up, median of 3
Peak memory: torch.cuda.max_memory_allocated (tensors) and max_memory_reserved (the
caching allocator's pool), each part measured from a reset. Prints a JSON line
"cuda_peer_json {...}". Option --compile also times a torch.compile'd training step;
--compile-only times only that (printed as "cuda_peer_compile_json {...}"). Option --attn
times only attention at the training shape (attn_bench; "cuda_peer_attn_json {...}").
--decode-only (issue 16, the peer of `cuda_bench decode`): the decoding figures alone,
bf16 parameters (as a serving setup would hold them), SDPA, model.generate: the study's
rollout (8 prompts of 128 tokens + 128 new, median of 3) and batch 32 (32 x (128 + 128),
median of 2), sampled; "cuda_peer_decode_json {...}".
"""
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM


def config():
    return Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                       num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True, use_cache=True)


def sync_time(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def train(model, ids, steps_warm=2, steps=5, compiled=False):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01)

    def fwd_bwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss

    step_fn = torch.compile(fwd_bwd) if compiled else fwd_bwd

    def step():
        loss = step_fn()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    times, loss = [], None
    for s in range(steps_warm + steps):
        t, loss = sync_time(step)
        if s >= steps_warm:
            times.append(t)
    del opt
    return statistics.median(times), float(loss.detach())


def compiled_only():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config()).to(dev)
    ids = torch.randint(0, 151936, (8, 1024), device=dev)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    t, loss = train(model, ids, steps_warm=3, steps=5, compiled=True)
    res = {"device": torch.cuda.get_device_name(0), "train_compiled_step_s": t,
           "train_compiled_tokens_per_s": 8 * 1024 / t,
           "train_compiled_peak_alloc_bytes": torch.cuda.max_memory_allocated(),
           "compile_and_run_s": time.perf_counter() - t0}
    print(f"training (torch.compile): {t * 1e3:.1f} ms/step, {8 * 1024 / t:.0f} tokens/s",
          flush=True)
    print("cuda_peer_compile_json " + json.dumps(res), flush=True)


def decode_only():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    print(f"cuda_peer decode: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name(0)}", flush=True)
    model = Qwen2ForCausalLM(config()).to(dev, dtype=torch.bfloat16).eval()
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__}
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)

    def run(B, NEW, reps):
        prompt = torch.randint(0, 151936, (B, 128), device=dev)
        mask = torch.ones_like(prompt)

        def gen(n):
            with torch.no_grad():
                return model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=n, **kw)

        gen(4)
        times = []
        for _ in range(reps):
            t, out = sync_time(lambda: gen(NEW))
            assert out.shape == (B, 128 + NEW), out.shape
            times.append(t)
        return statistics.median(times)

    t8 = run(8, 128, 3)
    res.update(rollout_s=t8, rollout_tokens_per_s=8 * 128 / t8)
    print(f"rollout 8 x (128 + 128), generate, bf16: {t8:.3f} s, {8 * 128 / t8:.0f} new tokens/s",
          flush=True)
    t32 = run(32, 128, 2)
    res.update(b32_s=t32, b32_tokens_per_s=32 * 128 / t32)
    print(f"batch 32 x (128 + 128), generate, bf16: {t32:.3f} s, {32 * 128 / t32:.0f} new tokens/s",
          flush=True)
    print("cuda_peer_decode_json " + json.dumps(res), flush=True)


def main():
    if "--compile-only" in sys.argv:
        compiled_only()
        return
    if "--attn" in sys.argv:
        attn_bench()
        return
    if "--decode-only" in sys.argv:
        decode_only()
        return
    compile_too = "--compile" in sys.argv
    dev = torch.device("cuda")
    torch.manual_seed(0)
    print(f"cuda_peer: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name(0)}", flush=True)
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__}
    model = Qwen2ForCausalLM(config()).to(dev)
    res["attn_implementation"] = model.config._attn_implementation
    B, T = 8, 1024
    ids = torch.randint(0, 151936, (B, T), device=dev)
    torch.cuda.reset_peak_memory_stats()
    t, loss = train(model, ids)
    res.update(train_step_s=t, train_tokens_per_s=B * T / t, train_loss=loss,
               train_peak_alloc_bytes=torch.cuda.max_memory_allocated(),
               train_peak_reserved_bytes=torch.cuda.max_memory_reserved())
    print(f"training (eager, {res['attn_implementation']} attention): {t * 1e3:.1f} ms/step, "
          f"{B * T / t:.0f} tokens/s, loss {loss:.4f}, peak allocated "
          f"{res['train_peak_alloc_bytes'] / 2**30:.2f} GiB, reserved "
          f"{res['train_peak_reserved_bytes'] / 2**30:.2f} GiB", flush=True)
    if compile_too:
        t, loss = train(model, ids, steps_warm=3, steps=5, compiled=True)
        res.update(train_compiled_step_s=t, train_compiled_tokens_per_s=B * T / t)
        print(f"training (torch.compile): {t * 1e3:.1f} ms/step, {B * T / t:.0f} tokens/s",
              flush=True)
    for p in model.parameters():
        p.grad = None
    torch.cuda.empty_cache()

    # decoding
    torch.cuda.reset_peak_memory_stats()
    DB, PL, NEW = 8, 128, 128
    prompt = torch.randint(0, 151936, (DB, PL), device=dev)
    mask = torch.ones_like(prompt)
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)

    def gen(n):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=n, **kw)

    gen(8)
    times = []
    for _ in range(3):
        t, out = sync_time(lambda: gen(NEW))
        assert out.shape == (DB, PL + NEW), out.shape
        times.append(t)
    t = statistics.median(times)
    res.update(decode_s=t, decode_tokens_per_s=DB * NEW / t,
               decode_peak_alloc_bytes=torch.cuda.max_memory_allocated(),
               decode_peak_reserved_bytes=torch.cuda.max_memory_reserved())
    print(f"decoding (generate): {t:.3f} s, {DB * NEW / t:.0f} new tokens/s, peak allocated "
          f"{res['decode_peak_alloc_bytes'] / 2**30:.2f} GiB", flush=True)
    print("cuda_peer_json " + json.dumps(res), flush=True)


def attn_bench():
    """bench/cuda_bench.c's attention part on the PyTorch side: F.scaled_dot_product_attention
    at 8 x 1024 tokens, 14 query heads over 2 KV heads (enable_gqa), head_dim 64, causal, bf16
    q/k/v in the model's (B, T, H, D) layout viewed as (B, H, T, D), forward and forward +
    backward, for the flash backend (what Qwen2's sdpa attention runs under autocast) and
    PyTorch's own cuDNN backend. FLOPs as in cuda_bench: forward 4 B H T^2 D / 2, backward
    2.5 x that. 3 warm-up calls, median of 20 timed with CUDA events."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    dev = torch.device("cuda")
    torch.manual_seed(0)
    B, T, H, Hkv, D = 8, 1024, 14, 2, 64
    f_fwd = 4.0 * B * H * T * T * D / 2
    f_bwd = 2.5 * f_fwd
    q = torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    k = torch.randn(B, T, Hkv, D, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    v = torch.randn(B, T, Hkv, D, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
    dout = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "gflop_fwd": f_fwd * 1e-9,
           "gflop_bwd": f_bwd * 1e-9}
    print(f"attention alone (PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{res['device']}): {B} x {T}, {H}/{Hkv} heads, head_dim {D}, causal, bf16", flush=True)

    def timed(fn):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
        return statistics.median(ts)

    # K/V expanded to all 14 heads (outside the timing) where a backend refuses enable_gqa
    ke = k.detach().repeat_interleave(H // Hkv, dim=1).requires_grad_()
    ve = v.detach().repeat_interleave(H // Hkv, dim=1).requires_grad_()
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        for gqa in (True, False):
            kk, vv = (k, v) if gqa else (ke, ve)

            def fwd():
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, scale=0.125,
                                                          enable_gqa=gqa)

            def fwd_bwd():
                out = fwd()
                q.grad = kk.grad = vv.grad = None
                out.backward(dout)

            try:
                with torch.no_grad():
                    tf = timed(fwd)
                tfb = timed(fwd_bwd)
            except RuntimeError as err:
                print(f"  {name} ({'GQA' if gqa else 'K/V expanded'}): not available here "
                      f"({str(err).splitlines()[0][:160]})", flush=True)
                continue
            tb = tfb - tf
            res.update({f"{name}_fwd_ms": tf, f"{name}_fwd_bwd_ms": tfb, f"{name}_gqa": gqa})
            print(f"  {name:6s} ({'GQA' if gqa else 'K/V expanded to 14 heads'}) fwd {tf:.3f} ms "
                  f"({f_fwd / tf * 1e-9:.0f} TFLOP/s), bwd {tb:.3f} ms ({f_bwd / tb * 1e-9:.0f} "
                  f"TFLOP/s), fwd+bwd {tfb:.3f} ms ({(f_fwd + f_bwd) / tfb * 1e-9:.0f} TFLOP/s)",
                  flush=True)
            break
    print("cuda_peer_attn_json " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
