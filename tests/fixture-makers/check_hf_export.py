"""Checks that folders exported by HuggingFaceCheckpoint.Save load in Python and compute our logits.

By hand (tests never need Python):
  LLM_HF_EXPORT_DIR=/tmp/hf-export dotnet test tests/Microsoft.ML.Llm.Tests -c Release --filter "FullyQualifiedName~OurModelsExportAndReimport"
  python3 tests/fixture-makers/check_hf_export.py /tmp/hf-export

For each exported folder X (with X.ours.json beside it: our input ids, logits and tokenized text) this loads the folder
with transformers' AutoModelForCausalLM / AutoTokenizer when transformers is installed, and always with the reference
forward passes of make_hf_fixtures.py (written after transformers' modeling_gpt2.py / modeling_llama.py) reading
config.json and the safetensors file as transformers does; it prints the largest logit difference per loader.
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_hf_fixtures import gpt2_forward, llama_forward, bpe_encode  # noqa: E402

CODES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    assert header.get("__metadata__", {}).get("format") == "pt", "metadata format must be pt"
    base, out = 8 + n, {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, size = CODES[entry["dtype"]]
        b, e = entry["data_offsets"]
        raw = bytearray(data[base + b: base + e])
        t = torch.frombuffer(raw, dtype=torch.int32 if size == 4 else torch.int16).view(dtype)
        out[name] = t.reshape(entry["shape"]).to(torch.float32)
    return out


def main(root):
    failures = 0
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        ours = json.load(open(folder + ".ours.json"))
        cfg = json.load(open(os.path.join(folder, "config.json")))
        ids = torch.tensor(ours["input_ids"])
        want = torch.tensor(ours["logits"])
        sd = read_safetensors(os.path.join(folder, "model.safetensors"))
        with torch.no_grad():
            if cfg["model_type"] == "gpt2":
                cfg.setdefault("layer_norm_epsilon", 1e-5)
                got = gpt2_forward(sd, cfg, ids)[0] if cfg.get("tie_word_embeddings", True) else None
            else:
                if cfg["tie_word_embeddings"]:
                    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
                got = llama_forward(sd, cfg, ids)[0]
        diff = (got - want).abs().max().item()
        vocab = json.load(open(os.path.join(folder, "vocab.json"), encoding="utf-8"))
        merges = [tuple(l.split(" ")) for l in open(os.path.join(folder, "merges.txt"), encoding="utf-8").read().splitlines()[1:] if l]
        tokens_ok = bpe_encode(ours["text"], vocab, merges) == ours["text_ids"]
        print(f"{name}: {cfg['architectures'][0]}, reference loader max |logit diff| = {diff:.3g}, tokenizer files encode as ours: {tokens_ok}")
        failures += diff > 1e-4 or not tokens_ok
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            print("  transformers is not installed here: checked with the reference loader only")
            continue
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        with torch.no_grad():
            hf = model(ids).logits[0]
        hf_diff = (hf - want).abs().max().item()
        tok_ok = AutoTokenizer.from_pretrained(folder)(ours["text"])["input_ids"] == ours["text_ids"]
        print(f"  transformers {model.__class__.__name__}: max |logit diff| = {hf_diff:.3g}, AutoTokenizer encodes as ours: {tok_ok}")
        failures += hf_diff > 1e-4 or not tok_ok
    print("FAILED" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hf-export"))
