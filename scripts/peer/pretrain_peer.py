# pretrain_peer: does PyTorch + transformers learn the synthetic task's topic conditioning
# where our pretraining does not? (issue 7; docs/benchmarks.md, "Why the ground truth hardly
# moves"). Trains the embedded default's Qwen2 config on the same packed token stream
# (rows of 128, <|endoftext|> between documents, a fresh permutation of the rows each epoch)
# with AdamW, warm-up and cosine decay as `mxrlhf sft`'s pretraining, and prints the
# "own-topic share" every 100 steps: for each topic, the probability mass on its 32 words
# after "Tell me about T. ... Assistant: Start with the", divided by the mass on all 768
# topic words (chance 1/24). Also prints it for every model directory D/ours_* (ours).
# D holds: config.json (the pretrain stage's), corpus_ids.jsonl (`mxrlhf tokenize --jsonl`
# of data/corpus.jsonl), eval.json ({"names", "prompts": ids per topic, "words": first ids
# of " word" per topic}). Usage (on the GPU machine): python3 pretrain_peer.py D [STEPS];
# $PEER_RUNS picks the runs (below).
import json, math, sys, time, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
D = sys.argv[1]; steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1465
ev = json.load(open(f"{D}/eval.json"))
allw = sorted({i for t in ev["names"] for i in ev["words"][t]})
dev = torch.device("cuda")
def cond(model):
    model.eval(); r = []
    with torch.no_grad():
        for t, p in zip(ev["names"], ev["prompts"]):
            lp = torch.log_softmax(model(torch.tensor([p], device=dev)).logits[0, -1].float(), -1)
            own = torch.logsumexp(lp[ev["words"][t]], 0); tot = torch.logsumexp(lp[allw], 0)
            r.append(math.exp(own - tot))
    model.train(); return sum(r) / len(r)
import glob, os
for name in sorted(os.path.basename(p) for p in glob.glob(f"{D}/ours_*")):
    m = Qwen2ForCausalLM.from_pretrained(f"{D}/{name}", torch_dtype=torch.float32).to(dev)
    print(f"{name}: own-topic share of topic-word mass {cond(m):.3f} (chance {1/24:.3f})", flush=True)
cfg = json.load(open(f"{D}/config.json"))
keep = {k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")}
eot = cfg["eos_token_id"]; stream = []
for l in open(f"{D}/corpus_ids.jsonl"):
    stream += json.loads(l)["ids"] + [eot]
def train(lr, steps, B, seed, T=128, warm=20, minr=0.1, extra=None, ours_init=0):
    torch.manual_seed(seed)
    c = dict(keep); c.update(extra or {})
    model = Qwen2ForCausalLM(Qwen2Config(**c, attn_implementation="sdpa")).to(dev)
    if ours_init:
        with torch.no_grad():
            for nm, p in model.named_parameters():
                if "norm" in nm: p.uniform_(0.9, 1.1)
                else: p.uniform_(-ours_init, ours_init)
    n = len(stream) // T
    rows = torch.tensor(stream[: n * T], device=dev).view(n, T)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    def lr_at(s):
        if s <= warm: return lr * s / warm
        q = (s - warm) / max(1, steps - warm); return lr * (minr + (1 - minr) * 0.5 * (1 + math.cos(math.pi * q)))
    g = torch.Generator(device="cpu").manual_seed(seed); order = torch.randperm(n, generator=g); nxt = 0
    hist = []
    for s in range(1, steps + 1):
        idx = []
        for _ in range(B):
            if nxt == n: order = torch.randperm(n, generator=g); nxt = 0
            idx.append(order[nxt].item()); nxt += 1
        x = rows[idx]
        for pg in opt.param_groups: pg["lr"] = lr_at(s)
        loss = model(x, labels=x).loss
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
        if s % 100 == 0 or s == steps:
            hist.append(f"{s}:{cond(model):.2f}")
    print(f"lr {lr} steps {steps} B {B} T {T} seed {seed} {extra or ''} ours_init {ours_init}: last loss {loss.item():.3f}; share {' '.join(hist)}", flush=True)
import itertools
# (lr, steps, batch, seed, seq_len, warm-up, min lr ratio, config changes, our init range)
RUNS = [(3e-3, 1465, 16, 1234), (3e-3, 1465, 16, 1), (3e-3, 1465, 16, 2), (1e-2, 800, 16, 1234),
        (6e-3, 800, 16, 1234), (3e-3, 800, 32, 1234), (1e-2, 800, 32, 1234),
        (3e-3, 800, 16, 1234, 128, 20, 0.1, {"num_attention_heads": 8, "num_key_value_heads": 4}),
        (3e-3, 800, 16, 1234, 128, 20, 0.1, {"num_hidden_layers": 2}),
        (3e-3, 800, 32, 1234, 128, 20, 0.1, None, 0.02), (3e-3, 800, 32, 1, 128, 20, 0.1, None, 0.02),
        (3e-3, 800, 32, 1, 128, 20, 0.1, None, 0)]
# $PEER_RUNS (a JSON list of such argument lists) replaces RUNS, e.g. head_dim 64 against 32:
# [[3e-3, 800, 32, 1234], [3e-3, 800, 32, 1234, 128, 20, 0.1, {"num_attention_heads": 2,
#   "num_key_value_heads": 1}]]
for args in json.loads(os.environ["PEER_RUNS"]) if os.environ.get("PEER_RUNS") else RUNS:
    train(*args)
