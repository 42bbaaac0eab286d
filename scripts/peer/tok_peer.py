#!/usr/bin/env python3
"""Peer check for src/tokenizer: what Hugging Face `tokenizers` (Rust) says, as fixtures.

Runs on the device machine (which has `tokenizers`); writes, under OUT:

  qwen_ids.jsonl.gz     the string set (tok_make_strings.py) with Hugging Face's ids for the
                        Qwen tokenizer.json: {"text"|"hex"|"hh": ..., "ids": [...]}
  qwen_decode.jsonl.gz  random id sequences with decode(ids) and decode(ids, skip_special)
  trained_ids.jsonl.gz  for each of our trained tokenizer.json files: {"tok", "i", "ids"},
                        "i" indexing the lines of qwen_ids (synthetic strings and the first
                        --trained-hh HH dialogues); also decode lines {"tok", "ids", "text",
                        "text_skip"}
  peer_report.json      versions, CPU, load/encode/decode timings (one thread), and checks
                        (HF decode(encode(x)) == normalize(x); trained files load)

Usage: tok_peer.py --dir DIR --out OUT
  DIR holds strings.jsonl, qwen.json, harmless-base-test.jsonl.gz and trained/*.json
"""
import argparse
import gzip
import json
import os
import platform
import random
import sys
import time

# One thread for the batch calls too: set before tokenizers starts its pool.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def load_strings(d):
    hh = [json.loads(l) for l in gzip.open(os.path.join(d, "harmless-base-test.jsonl.gz"), "rt",
                                           encoding="utf-8")]
    items = []
    for line in open(os.path.join(d, "strings.jsonl"), encoding="utf-8"):
        o = json.loads(line)
        if "text" in o:
            items.append((o, o["text"]))
        elif "hex" in o:
            items.append((o, bytes.fromhex(o["hex"]).decode("utf-8")))
        else:
            i, field = o["hh"]
            items.append((o, hh[i][field]))
    return items, hh


def write_gz(path, rows):
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


def random_id_seqs(tok, rng, n):
    size = tok.get_vocab_size(with_added_tokens=True)
    added = sorted(tok.get_added_tokens_decoder().keys())
    seqs = []
    for _ in range(n):
        k = rng.randint(1, 24)
        s = []
        for _ in range(k):
            r = rng.random()
            if r < 0.45:
                s.append(rng.randrange(0, min(size, 151643)))
            elif r < 0.8:
                s.append(rng.randrange(0, 256) if size > 256 else rng.randrange(size))
            elif added:
                s.append(rng.choice(added))
            else:
                s.append(rng.randrange(size))
        seqs.append(s)
    return seqs


def timed(fn, reps=1):
    best = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--trained-hh", type=int, default=200)
    a = ap.parse_args()
    rep = {"tokenizers_version": tokenizers.__version__, "python": sys.version.split()[0],
           "cpu": cpu_model(), "platform": platform.platform(), "checks": {}, "timing": {}}
    items, hh = load_strings(a.dir)
    texts = [t for _, t in items]

    # ---- Qwen ids
    qpath = os.path.join(a.dir, "qwen.json")
    tok = Tokenizer.from_file(qpath)
    rows, bad_roundtrip = [], []
    for (o, t) in items:
        ids = tok.encode(t).ids
        r = dict(o)
        r["ids"] = ids
        rows.append(r)
        back = tok.decode(ids, skip_special_tokens=False)
        if back != tok.normalizer.normalize_str(t):
            bad_roundtrip.append(len(rows) - 1)
    write_gz(os.path.join(a.out, "qwen_ids.jsonl.gz"), rows)
    rep["checks"]["qwen_strings"] = len(rows)
    rep["checks"]["qwen_roundtrip_mismatch"] = bad_roundtrip[:50]
    rng = random.Random(7)
    drows = []
    for s in random_id_seqs(tok, rng, 400):
        drows.append({"ids": s, "text": tok.decode(s, skip_special_tokens=False),
                      "text_skip": tok.decode(s, skip_special_tokens=True)})
    write_gz(os.path.join(a.out, "qwen_decode.jsonl.gz"), drows)

    # ---- our trained tokenizers
    synthetic = [i for i, (o, _) in enumerate(items) if "hh" not in o]
    hh_idx = [i for i, (o, _) in enumerate(items) if "hh" in o][: a.trained_hh]
    trows = []
    tdir = os.path.join(a.dir, "trained")
    rep["checks"]["trained"] = {}
    for name in sorted(os.listdir(tdir)):
        if not name.endswith(".json"):
            continue
        stem = name[:-5]
        try:
            t2 = Tokenizer.from_file(os.path.join(tdir, name))
        except Exception as ex:  # reported, not fatal: the other files still count
            rep["checks"]["trained"][stem] = "load failed: %r" % (ex,)
            continue
        for i in synthetic + hh_idx:
            trows.append({"tok": stem, "i": i, "ids": t2.encode(texts[i]).ids})
        for s in random_id_seqs(t2, random.Random(11), 150):
            trows.append({"tok": stem, "ids": s, "text": t2.decode(s, skip_special_tokens=False),
                          "text_skip": t2.decode(s, skip_special_tokens=True)})
        rep["checks"]["trained"][stem] = "loaded; vocab %d" % t2.get_vocab_size(with_added_tokens=True)
    write_gz(os.path.join(a.out, "trained_ids.jsonl.gz"), trows)

    # ---- timing: the HH-RLHF file, every chosen and rejected dialogue, one thread
    corpus = [d[k] for d in hh for k in ("chosen", "rejected")]
    mb = sum(len(s.encode("utf-8")) for s in corpus) / 1e6
    t_load, tok = timed(lambda: Tokenizer.from_file(qpath), reps=3)
    t_enc, enc = timed(lambda: [tok.encode(s).ids for s in corpus])
    t_enc2, _ = timed(lambda: [tok.encode(s).ids for s in corpus])
    t_batch, _ = timed(lambda: tok.encode_batch(corpus))
    t_dec, dec = timed(lambda: [tok.decode(x) for x in enc])
    t_dbatch, _ = timed(lambda: tok.decode_batch(enc))
    out_mb = sum(len(s.encode("utf-8")) for s in dec) / 1e6
    rep["timing"] = {
        "input_mb": round(mb, 3), "texts": len(corpus), "tokens": sum(len(x) for x in enc),
        "load_s_best_of_3": round(t_load, 4),
        "encode_loop_s": round(t_enc, 4), "encode_loop_mb_s": round(mb / t_enc, 2),
        "encode_loop_again_s": round(t_enc2, 4), "encode_loop_again_mb_s": round(mb / t_enc2, 2),
        "encode_batch_1thread_s": round(t_batch, 4), "encode_batch_1thread_mb_s": round(mb / t_batch, 2),
        "decode_loop_s": round(t_dec, 4), "decode_loop_mb_s": round(out_mb / t_dec, 2),
        "decode_batch_1thread_s": round(t_dbatch, 4), "decode_batch_1thread_mb_s": round(out_mb / t_dbatch, 2),
    }
    with open(os.path.join(a.out, "peer_report.json"), "w") as f:
        json.dump(rep, f, indent=2, ensure_ascii=False)
    print(json.dumps(rep, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
