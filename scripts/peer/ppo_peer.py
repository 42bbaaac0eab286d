#!/usr/bin/env python3
"""ppo_peer: the PyTorch + transformers peer of one PPO step of `mxrlhf baseline` (issue 10,
item 4), written as TRL 0.11's PPOTrainer does the step, with the same token counts.

TRL itself is not installed on the GPU machine (no network), so its step is written out
here from trl/trainer/ppo_trainer.py and trl/core.py (0.11): the same functions
(logprobs_from_logits, masked_mean/var/whiten, entropy_from_logits, compute_rewards,
compute_advantages, loss) in the same order, on transformers' models:

  policy     Qwen2ForCausalLM + TRL's ValueHead (dropout 0.1, Linear(hidden, 1)) on
             hidden_states[-1]: AutoModelForCausalLMWithValueHead, logits cast to float32
  reference  a second Qwen2ForCausalLM, frozen (TRL's create_reference_model)
  reward     Qwen2ForSequenceClassification, num_labels 1 (the user's reward pipeline)

Qwen2.5-0.5B's config (scripts/peer/qwen2.5-0.5b_config.json), transformers' random init,
float32 parameters, torch.autocast(bfloat16) for every forward and backward (the issue's
peer setting), SDPA attention, torch.optim.Adam (TRL's optimizer), no gradient clipping
(TRL's max_grad_norm None). Batch 8, mini-batch 4, 4 PPO epochs, kl penalty "kl",
adaptive KL controller's initial 0.2, gamma 1, lam 0.95, cliprange 0.2, cliprange_value
0.2, vf_coef 0.1.

Token counts: --samples is the samples.jsonl of an `mxrlhf baseline` run; step s of this
peer uses the prompt length (query_tokens) and response length (tokens) of every row of
that run's step s, prompts of random ids below --id-range. Rollout: one
model.generate call for the 8 rows, left-padded (TRL's default generation batch is 4,
which would be slower), sampled (temperature 1, top_k 0, top_p 1), with
min_new_tokens = max_new_tokens = the run's response length (so it never stops early).

Phases: rollout (generate), reward_inference (reward model on the 8 rows, TRL's
batched_forward_pass of the policy and of the reference in chunks of mini_batch_size,
compute_rewards, compute_advantages), gradient_update (4 epochs x 2 mini-batches: forward,
TRL's loss, backward, Adam step, zero_grad). Marked with scripts/mxrlhf_phase.py so that
`mxrlhf monitor` measures them as it measures ours. A first step replaying the first
requested step's shapes runs as phase "warmup".

The steps are replayed --passes times (default 2): the first pass meets every shape for the
first time (marked first_rollout, first_reward_inference, first_gradient_update: PyTorch's
allocator and the attention backend prepare new shapes then, which a long run with varying
prompt lengths keeps paying until its shapes repeat); the last pass, the same steps again,
carries the study's phase names and is the peer's figure (its best case).

Usage: ppo_peer.py --samples FILE --steps FIRST-LAST --config FILE [--id-range N] [--passes P]
       [--json OUT]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import mxrlhf_phase as mp  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import (Qwen2Config, Qwen2ForCausalLM,  # noqa: E402
                          Qwen2ForSequenceClassification)

B, MB, EPOCHS = 8, 4, 4
LR, KL_COEF, GAMMA, LAM = 1.41e-5, 0.2, 1.0, 0.95
CLIP, CLIP_V, VF_COEF, RATIO_THRESHOLD = 0.2, 0.2, 0.1, 10.0
PHASES = ("rollout", "reward_inference", "gradient_update")


# ---- trl/core.py (0.11) --------------------------------------------------------------------

def logprobs_from_logits(logits, labels):
    logp = F.log_softmax(logits, dim=2)
    return torch.gather(logp, 2, labels.unsqueeze(2)).squeeze(-1)


def masked_mean(values, mask, axis=None):
    if axis is not None:
        return (values * mask).sum(axis=axis) / mask.sum(axis=axis)
    return (values * mask).sum() / mask.sum()


def masked_var(values, mask, unbiased=True):
    mean = masked_mean(values, mask)
    centered = values - mean
    variance = masked_mean(centered**2, mask)
    if unbiased:
        mask_sum = mask.sum()
        variance = variance * (mask_sum / (mask_sum - 1))
    return variance


def masked_whiten(values, mask, shift_mean=True):
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


def entropy_from_logits(logits):
    pd = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)


def clip_by_value(x, lo, hi):
    return torch.max(torch.min(x, hi), lo)


# ---- models ----------------------------------------------------------------------------------

class ValueHead(torch.nn.Module):
    """trl.models.modeling_value_head.ValueHead."""

    def __init__(self, hidden):
        super().__init__()
        self.dropout = torch.nn.Dropout(0.1)
        self.summary = torch.nn.Linear(hidden, 1)

    def forward(self, h):
        out = self.dropout(h)
        if out.dtype != self.summary.weight.dtype:
            out = out.to(self.summary.weight.dtype)
        return self.summary(out)


class WithValueHead(torch.nn.Module):
    """trl.AutoModelForCausalLMWithValueHead.forward."""

    def __init__(self, cfg):
        super().__init__()
        self.pretrained_model = Qwen2ForCausalLM(cfg)
        self.v_head = ValueHead(cfg.hidden_size)

    def forward(self, input_ids, attention_mask):
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask,
                                    output_hidden_states=True)
        value = self.v_head(out.hidden_states[-1]).squeeze(-1)
        logits = out.logits
        if logits.dtype != torch.float32:
            logits = logits.float()
        return logits, value


def autocast():
    return torch.autocast("cuda", dtype=torch.bfloat16)


# ---- one step ----------------------------------------------------------------------------------

def batched_forward_pass(model, ids, att, masks_resp, value_head):
    """TRL's batched_forward_pass: chunks of mini_batch_size; log-probs of positions 1.., the
    values, and the masks of the response tokens."""
    lps, vals = [], []
    T = ids.shape[1]
    for i in range(0, ids.shape[0], MB):
        # each chunk padded to its own longest row, as TRL's collator pads it
        Tc = int(att[i:i + MB].sum(1).max())
        x, a = ids[i:i + MB, :Tc], att[i:i + MB, :Tc]
        if value_head:
            logits, v = model(x, a)
        else:
            logits, v = model(input_ids=x, attention_mask=a).logits.float(), None
        lps.append(F.pad(logprobs_from_logits(logits[:, :-1, :], x[:, 1:]), (0, T - Tc)))
        if v is not None:
            vals.append(F.pad(v[:, :-1], (0, T - Tc)))
    lp = torch.cat(lps)
    return lp, (torch.cat(vals) if value_head else None), masks_resp


def compute_rewards(scores, logprobs, ref_logprobs, masks):
    rewards, non_score = [], []
    for score, lp, ref, mask in zip(scores, logprobs, ref_logprobs, masks):
        kl = lp - ref
        ns = -KL_COEF * kl
        non_score.append(ns)
        reward = ns.clone()
        last = mask.nonzero()[-1]
        reward[last] += score
        rewards.append(reward)
    return torch.stack(rewards), torch.stack(non_score)


def compute_advantages(values, rewards, mask):
    lastgaelam = 0
    rev = []
    values = values * mask
    rewards = rewards * mask
    n = rewards.shape[-1]
    for t in reversed(range(n)):
        nextvalues = values[:, t + 1] if t < n - 1 else 0.0
        delta = rewards[:, t] + GAMMA * nextvalues - values[:, t]
        lastgaelam = delta + GAMMA * LAM * lastgaelam
        rev.append(lastgaelam)
    adv = torch.stack(rev[::-1]).transpose(0, 1)
    returns = adv + values
    adv = masked_whiten(adv, mask).detach()
    return values, adv, returns


def ppo_loss(old_lp, values, logits, vpreds, logprobs, mask, adv, returns):
    vpredclipped = clip_by_value(vpreds, values - CLIP_V, values + CLIP_V)
    vf_losses1 = (vpreds - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    ratio = torch.exp(logprobs - old_lp)
    pg_losses = -adv * ratio
    pg_losses2 = -adv * torch.clamp(ratio, 1.0 - CLIP, 1.0 + CLIP)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    loss = pg_loss + VF_COEF * vf_loss
    avg_ratio = masked_mean(ratio, mask).item()
    if avg_ratio > RATIO_THRESHOLD:
        pg_loss = pg_loss * 0.0
        vf_loss = vf_loss * 0.0
        loss = loss * 0.0
    # statistics TRL computes in loss() (each a device op; .item()/.cpu() later)
    entropy = masked_mean(entropy_from_logits(logits), mask)
    approxkl = 0.5 * masked_mean((logprobs - old_lp) ** 2, mask)
    policykl = masked_mean(old_lp - logprobs, mask)
    return loss, {"pg": pg_loss.detach(), "vf": vf_loss.detach(), "entropy": entropy.detach(),
                  "approxkl": approxkl.detach(), "policykl": policykl.detach()}


def make_rows(qlens, id_range, gen):
    return [torch.randint(0, id_range, (q,), generator=gen) for q in qlens]


def one_step(models, opt, prompts, rlen, pad, names, dev, step):
    policy, ref, rm = models
    out = {}
    # rollout: left-padded prompts, one generate call
    L = max(p.numel() for p in prompts)
    ids = torch.full((B, L), pad, dtype=torch.long)
    att = torch.zeros((B, L), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, L - p.numel():] = p
        att[b, L - p.numel():] = 1
    ids, att = ids.to(dev), att.to(dev)
    t0 = time.perf_counter()
    with mp.phase(names[0]):
        with torch.no_grad(), autocast():
            gen = policy.pretrained_model.generate(
                input_ids=ids, attention_mask=att, do_sample=True, temperature=1.0, top_k=0,
                top_p=1.0, max_new_tokens=rlen, min_new_tokens=rlen, pad_token_id=pad,
                eos_token_id=pad)
    out["rollout"] = time.perf_counter() - t0
    resp = gen[:, L:]
    assert resp.shape[1] == rlen, resp.shape
    # query + response, right-padded (TRL's data collator for the forward passes)
    T = max(p.numel() for p in prompts) + rlen
    seq = torch.full((B, T), pad, dtype=torch.long, device=dev)
    satt = torch.zeros((B, T), dtype=torch.long, device=dev)
    masks = torch.zeros((B, T - 1), device=dev)
    seqlen = [p.numel() + rlen for p in prompts]
    for b, p in enumerate(prompts):
        q = p.numel()
        seq[b, :q] = p.to(dev)
        seq[b, q:q + rlen] = resp[b]
        satt[b, :q + rlen] = 1
        masks[b, q - 1:q - 1 + rlen] = 1

    t0 = time.perf_counter()
    with mp.phase(names[1]):
        with torch.no_grad(), autocast():
            scores = rm(input_ids=seq, attention_mask=satt).logits[:, 0].float()
            old_lp, values, _ = batched_forward_pass(policy, seq, satt, masks, True)
            ref_lp, _, _ = batched_forward_pass(ref, seq, satt, masks, False)
        values = values.float()
        rewards, _ = compute_rewards(scores, old_lp, ref_lp, masks)
        values, adv, returns = compute_advantages(values, rewards, masks)
    out["reward_inference"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = []
    with mp.phase(names[2]):
        policy.train()
        for epoch in range(EPOCHS):
            # keyed by (step, epoch): every pass over a step forms the same mini-batches
            perm = torch.randperm(B, generator=torch.Generator().manual_seed(1000 * step + epoch))
            for j in range(0, B, MB):
                rows_mb = perm[j:j + MB].tolist()
                Tm = max(seqlen[r] for r in rows_mb)  # the mini-batch's longest row
                idx = torch.tensor(rows_mb, device=dev)
                x, a, m = seq[idx, :Tm], satt[idx, :Tm], masks[idx, :Tm - 1]
                with autocast():
                    logits, v = policy(x, a)
                    lp = logprobs_from_logits(logits[:, :-1, :], x[:, 1:])
                    vp = v[:, :-1].float()
                    loss, st = ppo_loss(old_lp[idx, :Tm - 1], values[idx, :Tm - 1],
                                        logits[:, :-1, :], vp, lp, m, adv[idx, :Tm - 1],
                                        returns[idx, :Tm - 1])
                loss.backward()
                opt.step()
                opt.zero_grad()
                stats.append(st)
        policy.eval()
        loss_pg = torch.stack([s["pg"] for s in stats]).mean().item()
    out["gradient_update"] = time.perf_counter() - t0
    out["loss_policy"] = loss_pg
    out["score_mean"] = scores.mean().item()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", required=True)
    ap.add_argument("--steps", required=True, help="FIRST-LAST (1-based, inclusive)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--id-range", type=int, default=8192)
    ap.add_argument("--passes", type=int, default=2, help="replays of the steps (default 2)")
    ap.add_argument("--json")
    a = ap.parse_args()
    first, last = (int(x) for x in a.steps.split("-"))
    rows = {}
    for line in open(a.samples):
        r = json.loads(line)
        if first <= r["step"] <= last:
            rows.setdefault(r["step"], {})[r["row"]] = (r["query_tokens"], r["tokens"])
    steps = sorted(rows)
    assert steps == list(range(first, last + 1)), f"samples lack steps of {a.steps}"
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cj = json.load(open(a.config))
    keep = {k: v for k, v in cj.items() if k not in ("architectures", "transformers_version", "torch_dtype")}
    cfg = Qwen2Config(**keep)
    cfg.pad_token_id = cfg.vocab_size - 1  # the reward model pools at the last non-pad token
    print(f"ppo_peer: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name(0)}", flush=True)
    t0 = time.perf_counter()
    with dev:
        policy = WithValueHead(cfg).eval()
        ref = Qwen2ForCausalLM(cfg).eval().requires_grad_(False)
        rm = Qwen2ForSequenceClassification(Qwen2Config(**{**keep, "num_labels": 1,
                                                           "pad_token_id": cfg.pad_token_id}))
        rm = rm.eval().requires_grad_(False)
    opt = torch.optim.Adam(policy.parameters(), lr=LR)
    print(f"models built in {time.perf_counter() - t0:.1f} s; attention "
          f"{policy.pretrained_model.config._attn_implementation}", flush=True)
    gen = torch.Generator().manual_seed(1234)
    models = (policy, ref, rm)
    pad = cfg.pad_token_id

    def shapes(s):
        r = rows[s]
        q = [r[b][0] for b in range(B)]
        lens = {r[b][1] for b in range(B)}
        assert len(lens) == 1, f"step {s}: responses of different lengths {lens} (run with min_new_tokens = max_new_tokens)"
        return q, lens.pop()

    q, rl = shapes(steps[0])
    torch.cuda.reset_peak_memory_stats()
    w = one_step(models, opt, make_rows(q, a.id_range, gen), rl, pad,
                 ("warmup", "warmup_reward", "warmup_gradient"), dev, steps[0])
    print(f"warm-up step: {json.dumps(w)}", flush=True)
    # Pass 1 meets each step's shapes for the first time (PyTorch and cuDNN plan new shapes
    # then); the last pass replays the same steps again. Only the last pass carries the
    # study's phase names; earlier passes are marked first_<phase>.
    passes = []
    for p in range(a.passes):
        last_pass = p == a.passes - 1
        names = PHASES if last_pass else tuple("first_" + n for n in PHASES)
        per = []
        for s in steps:
            q, rl = shapes(s)
            r = one_step(models, opt, make_rows(q, a.id_range, gen), rl, pad, names, dev, s)
            r.update(step=s, query_tokens=q, response_tokens=rl)
            per.append(r)
            print(f"pass {p + 1}, step {s}: queries {sum(q)} tokens, responses {B} x {rl}: rollout "
                  f"{r['rollout']:.3f} s, reward_inference {r['reward_inference']:.3f} s, "
                  f"gradient_update {r['gradient_update']:.3f} s", flush=True)
        passes.append(per)
    per = passes[-1]
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__,
           "attn_implementation": policy.pretrained_model.config._attn_implementation,
           "steps": per, "first_pass_steps": passes[0] if a.passes > 1 else None,
           "peak_alloc_bytes": torch.cuda.max_memory_allocated(),
           "peak_reserved_bytes": torch.cuda.max_memory_reserved()}
    for k in PHASES:
        res[k + "_mean_s"] = statistics.mean(r[k] for r in per)
        res["first_pass_" + k + "_mean_s"] = statistics.mean(r[k] for r in passes[0])
    print(f"mean per step: rollout {res['rollout_mean_s']:.3f} s, reward_inference "
          f"{res['reward_inference_mean_s']:.3f} s, gradient_update {res['gradient_update_mean_s']:.3f} s; "
          f"peak allocated {res['peak_alloc_bytes'] / 2**30:.2f} GiB", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
