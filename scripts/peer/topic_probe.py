#!/usr/bin/env python3
"""topic_probe: does a model trained on the synthetic task condition on the prompt's topic?

  topic_probe.py MXRLHF MODEL_DIR [MODEL_DIR ...]

For each of the task's topics (read from src/data/synth_lists.c) and REPEATS draws, two
dialogues that differ only in three list words of the response,

  "\\n\\nHuman: Tell me about TOPIC.\\n\\nAssistant: Many experts mention a, b and c."

with a, b, c from TOPIC's own list or from another topic's list (the next topics in order).
`mxrlhf logprobs --text` scores both; the gap is the mean over draws of log p(own words) -
log p(other words), in nats per word. A model that ignores the prompt's topic has a gap near
0; one that has learnt "responses name words of the prompt's topic" has a gap near
log(number of topics) (3.2 nats for 24 topics) or more. Also printed: the share of draws
where the own words score higher. A diagnostic for the GPU preset's pretraining (issue 18):
the task's ground truth rises only if the policy and the reward model condition on the topic.
Runs the model on the CPU (--device cpu), 16 calls at a time.
"""
import concurrent.futures as cf
import json
import os
import random
import re
import subprocess
import sys

REPEATS = 4


def lists(path="src/data/synth_lists.c"):
    src = open(path).read()
    names = re.findall(r'"([a-z]+)"', src[src.index("data_synth_topic_names"):
                                           src.index("data_synth_topic_lists")])
    body = src[src.index("data_synth_topic_lists"):]
    words = []
    for name in names:
        m = re.search(r"/\* %s \*/ \{(.*?)\}" % name, body, re.S)
        words.append(re.findall(r'"([a-z]+)"', m.group(1)))
    return names, words


def score(mx, model, text):
    r = subprocess.run([mx, "logprobs", "--model", model, "--text", text, "--device", "cpu"],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode:
        raise RuntimeError("%s: %s" % (model, r.stderr.strip()[:300]))
    return sum(json.loads(r.stdout)["next_token_logprobs"])


def probe(mx, model, names, words):
    rng = random.Random(42)
    jobs = []
    for i, t in enumerate(names):
        for k in range(REPEATS):
            j = (i + 1 + k) % len(names)
            own, other = rng.sample(words[i], 3), rng.sample(words[j], 3)
            pre = "\n\nHuman: Tell me about %s.\n\nAssistant: Many experts mention " % t
            jobs.append((pre + "%s, %s and %s." % tuple(own), pre + "%s, %s and %s." % tuple(other)))
    with cf.ThreadPoolExecutor(16) as ex:
        a = list(ex.map(lambda p: score(mx, model, p[0]), jobs))
        b = list(ex.map(lambda p: score(mx, model, p[1]), jobs))
    gaps = [(x - y) / 3 for x, y in zip(a, b)]
    return sum(gaps) / len(gaps), sum(g > 0 for g in gaps) / len(gaps), len(gaps)


def main():
    mx, models = sys.argv[1], sys.argv[2:]
    names, words = lists()
    print("== topic probe: log p(own topic's words) - log p(another topic's words), nats per word "
          "(%d topics: a conditioned model ~ %.1f or more, an unconditioned one ~ 0)" %
          (len(names), __import__("math").log(len(names))))
    for m in models:
        if not os.path.exists(os.path.join(m, "config.json")):
            print("%-40s  (no model)" % m)
            continue
        try:
            g, share, n = probe(mx, m, names, words)
            print("%-40s  gap %+.2f nats/word; own words higher in %.0f%% of %d draws" %
                  (m, g, 100 * share, n))
        except RuntimeError as err:
            print("%-40s  error: %s" % (m, err))


if __name__ == "__main__":
    main()
