"""genret against Hugging Face transformers on identical weights, side by side (issue 23).

Both run in this one process on the same queries, in interleaved rounds, and the script
prints each side's queries/s and their ratio per mode and batch size:

- genret: `genret.Index(...).search(queries, mode=..., batch=...)`: encoder, constrained
  beam search and, for SEAL, document scoring.
- transformers: `T5ForConditionalGeneration.generate` over the same weights with beam search
  (`num_beams`, no length penalty, as genret sums log-probs), the same forced decoder prefix,
  the same source tokens, the model's restricted output vocabulary as a logits mask, and the
  constraint as `prefix_allowed_tokens_fn` backed by a Python dict (SEAL: every corpus n-gram
  up to `--max-ngram-len` tokens, as genret's FM-index allows them; DSI: the docid trie).
  It decodes only: it scores no documents.

SEAL needs a model trained with `--no-copy` (transformers has no copy head). DSI's model reads
with a frozen BERT-family encoder, which transformers' BertModel runs here; its lexical memory
is added as genret adds it.

Run through scripts/compare_hf.sh, which makes the virtual environment. By hand:
    python scripts/compare_hf.py --index IDX --queries corpus/cranfield/queries.jsonl \
        --modes seal dsi --batches 1 16 --rounds 3
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


def read_queries(path, limit):
    path = Path(path)
    if path.is_dir():
        path = path / "queries.jsonl"
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                out.append(json.loads(line)["text"])
            else:
                out.append(line.split("\t", 1)[1])
    return out[:limit] if limit else out


def load_manifest(index):
    return json.loads((Path(index) / "manifest.json").read_text())


def output_mask(config, vocab, torch):
    """genret's restricted output vocabulary as an additive logits mask (None: all tokens)."""
    tokens = config.get("output_tokens")
    if tokens is None:
        return None
    mask = torch.full((vocab,), -math.inf)
    mask[torch.tensor(tokens)] = 0.0
    return mask


class Seal:
    """The HF side of SEAL: source tokens, prefix and n-gram constraint as genret builds them."""

    def __init__(self, index, tok, max_len, torch, transformers):
        manifest = load_manifest(index)
        sp = manifest["tokenizer"]["specials"]
        self.sp = sp
        self.tok = tok
        self.max_len = max_len
        model_dir = Path(index) / "model"
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("copy_attention"):
            sys.exit(
                f"{model_dir} has a copy head, which transformers cannot run: train one with "
                "`genret train INDEX --no-copy` (scripts/compare_hf.sh does)"
            )
        self.model = transformers.T5ForConditionalGeneration.from_pretrained(model_dir).eval()
        self.mask = output_mask(config, self.model.config.vocab_size, torch)
        # Documents as the index lays them out: <title> title </title> text.
        banned = {sp[k] for k in ("pad", "eos", "unk", "query", "index", "ngram", "docid")}
        self.next = {}
        titles = "title" in manifest.get("fields", {}).get("indexed", ["title"])
        with open(Path(index) / "docs.jsonl", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                ids = []
                if titles and doc.get("title", "").strip():
                    ids = [sp["title_start"]] + self.encode(doc["title"]) + [sp["title_end"]]
                ids += self.encode(doc.get("text", ""))
                for i in range(len(ids)):
                    for j in range(i, min(i + max_len, len(ids))):
                        if ids[j] in banned:
                            break
                        self.next.setdefault(tuple(ids[i:j]), set()).add(ids[j])
        self.next = {k: sorted(v) for k, v in self.next.items()}
        self.eos = sp["eos"]
        self.min_steps = max_len

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids if text else []

    def sources(self, queries):
        return [([self.sp["query"]] + self.encode(q))[:64] for q in queries]

    def prefix(self):
        return [self.model.config.decoder_start_token_id, self.sp["ngram"]]

    def allowed(self, _batch, ids):
        gram = tuple(ids[2:].tolist())
        nxt = self.next.get(gram, [])
        return nxt + [self.eos] if gram and len(gram) <= self.max_len else nxt


def hf_generate(side, queries, batch, beam, torch, extra=None):
    """Decodes `queries` in batches with transformers' beam search; returns the best strings."""
    import transformers

    processors = transformers.LogitsProcessorList()
    if side.mask is not None:
        restrict = side.mask

        class Restrict(transformers.LogitsProcessor):
            def __call__(self, input_ids, scores):
                return scores + restrict

        processors.append(Restrict())
    best = []
    prefix = side.prefix()
    for i in range(0, len(queries), batch):
        chunk = queries[i : i + batch]
        kwargs = side.inputs(chunk, torch) if hasattr(side, "inputs") else None
        if kwargs is None:
            src = side.sources(chunk)
            width = max(len(s) for s in src)
            ids = torch.tensor([s + [0] * (width - len(s)) for s in src])
            attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in src])
            kwargs = {"input_ids": ids, "attention_mask": attention}
        with torch.no_grad():
            out = side.model.generate(
                **kwargs,
                decoder_input_ids=torch.tensor([prefix] * len(chunk)),
                num_beams=beam,
                num_return_sequences=1,
                max_new_tokens=side.max_len + 1,
                # genret's SEAL decodes every step up to --max-ngram-len, keeping the n-grams
                # of each; transformers' beams would stop at their first finished strings
                # (short n-grams score best), so it is held to the same number of steps.
                min_new_tokens=side.min_steps,
                length_penalty=0.0,
                do_sample=False,
                prefix_allowed_tokens_fn=side.allowed,
                logits_processor=processors,
                pad_token_id=side.sp["pad"],
                eos_token_id=side.eos,
            )
        best.extend(row[len(prefix) :].tolist() for row in out)
    return best


class Dsi:
    """The HF side of DSI: BertModel encoder (+ lexical memory), T5 decoder, docid trie."""

    def __init__(self, index, torch, transformers):
        import safetensors.torch
        import tokenizers

        manifest = load_manifest(index)
        model_dir = Path(index) / "dsi" / "model"
        config = json.loads((model_dir / "config.json").read_text())
        tensors = safetensors.torch.load_file(str(model_dir / "model.safetensors"))
        bert_cfg = config["bert_encoder"]
        self.bert = transformers.BertModel(
            transformers.BertConfig(**bert_cfg), add_pooling_layer=False
        ).eval()
        prefix = "bert."
        missing = self.bert.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
            strict=False,
        )
        if missing.missing_keys:
            sys.exit(f"BERT tensors missing from {model_dir}: {missing.missing_keys[:5]}")
        self.bert_vocab = bert_cfg["vocab_size"]
        self.lexical = tensors.get("encoder.lexical.weight")
        self.lexical_tokens = config.get("lexical_tokens")
        t5 = dict(config)
        for key in ("bert_encoder", "output_tokens", "lexical_memory", "lexical_tokens"):
            t5.pop(key, None)
        t5["num_layers"] = max(1, t5.get("num_layers") or 1)
        t5_config = transformers.T5Config(**t5)
        # Set again after construction: transformers may reset it, and then ties the head to
        # the input embeddings, which DSI's model keeps apart.
        t5_config.tie_word_embeddings = t5.get("tie_word_embeddings", True)
        self.model = transformers.T5ForConditionalGeneration(t5_config).eval()
        with torch.no_grad():
            for name, value in tensors.items():
                if name.startswith("decoder."):
                    self.model.get_parameter(name).copy_(value)
            shared = tensors["shared.weight"]
            self.model.shared.weight.copy_(shared)
            self.model.decoder.embed_tokens.weight.copy_(shared)
            self.model.lm_head.weight.copy_(tensors.get("lm_head.weight", shared))
        self.d_model = config["d_model"]
        self.mask = output_mask(config, self.model.config.vocab_size, torch)
        self.tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(256)
        # The docid trie. Atomic docids (genret's choice up to 100,000 documents) are one
        # token per document, `2 + document number` after the decoder's two specials.
        docs = manifest["corpus"]["docs"]
        if config["vocab_size"] != docs + 2:
            sys.exit("this script knows atomic DSI docids only (one token per document)")
        docids = [[2 + d] for d in range(docs)]
        self.trie = {}
        for seq in docids:
            for j in range(len(seq)):
                self.trie.setdefault(tuple(seq[:j]), set()).add(seq[j])
        self.ends = {tuple(seq) for seq in docids}
        self.trie = {k: sorted(v) for k, v in self.trie.items()}
        self.max_len = max(len(s) for s in docids)
        self.min_steps = 0
        self.eos = 1
        self.sp = {"pad": 0}

    def prefix(self):
        return [self.model.config.decoder_start_token_id]

    def inputs(self, queries, torch):
        enc = [self.tok.encode(q) for q in queries]
        width = max(len(e.ids) for e in enc)
        ids = torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in enc])
        mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in enc])
        with torch.no_grad():
            states = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            if self.lexical is not None:
                rows = ids
                keep = torch.ones_like(ids, dtype=states.dtype)
                if self.lexical_tokens is not None:
                    row_of = torch.full((self.bert_vocab,), -1, dtype=torch.long)
                    row_of[torch.tensor(self.lexical_tokens)] = torch.arange(
                        len(self.lexical_tokens)
                    )
                    rows = row_of[ids]
                    keep = (rows >= 0).to(states.dtype)
                    rows = rows.clamp(min=0)
                states = states + self.lexical[rows] * keep.unsqueeze(-1) * math.sqrt(
                    self.d_model
                )
        out = transformers_output(states)
        return {"encoder_outputs": out, "attention_mask": mask}

    def allowed(self, _batch, ids):
        path = tuple(ids[1:].tolist())
        nxt = list(self.trie.get(path, []))
        return nxt + [self.eos] if path in self.ends else nxt


def transformers_output(states):
    from transformers.modeling_outputs import BaseModelOutput

    return BaseModelOutput(last_hidden_state=states)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--modes", nargs="+", default=["seal", "dsi"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=64, help="queries per round")
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--max-ngram-len", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precision", default="f32", help="genret's --precision (f32, f16 or int8)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import genret
    import tokenizers
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    queries = read_queries(args.queries, args.limit)
    idx = genret.Index.open(args.index, precision=args.precision)
    sides = {}
    for mode in args.modes:
        t = time.perf_counter()
        if mode == "seal":
            tok = tokenizers.Tokenizer.from_file(str(Path(args.index) / "tokenizer.json"))
            sides[mode] = Seal(args.index, tok, args.max_ngram_len, torch, transformers)
        else:
            sides[mode] = Dsi(args.index, torch, transformers)
        print(f"[{mode}] transformers side ready in {time.perf_counter() - t:.1f} s", flush=True)
        # Warm both sides once (model loading, the word table, allocator pools).
        idx.search(queries[:2], mode=mode, beam=args.beam, batch=2)
        hf_generate(sides[mode], queries[:2], 2, args.beam, torch)
        if mode == "dsi":
            # Both sides must compute the same thing: their best documents are compared.
            ids = [json.loads(line)["id"] for line in open(Path(args.index) / "docs.jsonl")]
            ours = [hits[0].doc_id for hits in idx.search(queries, mode="dsi", k=1)]
            theirs = [ids[best[0] - 2] for best in hf_generate(sides[mode], queries, 16, args.beam, torch)]
            same = sum(a == b for a, b in zip(ours, theirs))
            print(f"[dsi] best document equal on {same} of {len(queries)} queries", flush=True)

    results = []
    for mode in args.modes:
        for batch in args.batches:
            rows = {"mode": mode, "batch": batch, "genret_qps": [], "hf_qps": []}
            for r in range(args.rounds):
                # Interleaved, and the order alternates, so drift hits both sides alike.
                order = ["genret", "hf"] if r % 2 == 0 else ["hf", "genret"]
                for side in order:
                    t = time.perf_counter()
                    if side == "genret":
                        hits = idx.search(queries, mode=mode, beam=args.beam, batch=batch)
                    else:
                        best = hf_generate(sides[mode], queries, batch, args.beam, torch)
                    qps = len(queries) / (time.perf_counter() - t)
                    rows[f"{side}_qps"].append(qps)
                print(
                    f"[{mode} batch {batch} round {r + 1}] genret {rows['genret_qps'][-1]:.2f} q/s, "
                    f"transformers {rows['hf_qps'][-1]:.2f} q/s",
                    flush=True,
                )
            ratios = [g / h for g, h in zip(rows["genret_qps"], rows["hf_qps"])]
            rows["ratios"] = ratios
            results.append(rows)
    print()
    print("| mode | batch | genret q/s | transformers q/s | genret / transformers |")
    print("|---|---|---|---|---|")
    for row in results:
        g, h, rt = row["genret_qps"], row["hf_qps"], row["ratios"]
        print(
            f"| {row['mode']} | {row['batch']} | {min(g):.2f}-{max(g):.2f} | "
            f"{min(h):.2f}-{max(h):.2f} | {min(rt):.1f}-{max(rt):.1f}x |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
