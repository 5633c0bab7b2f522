"""Makes the Hugging Face reference fixtures in tests/Microsoft.ML.Llm.Tests/Fixtures/hf/{gpt2-tiny,llama-tiny}.

Run by hand, never by the tests:  python3 tests/fixture-makers/make_hf_fixtures.py
Needs PyTorch (any version >= 1.13; Debian 12's python3-torch works) and the `regex` module.

Why no `transformers`: the machine that made these fixtures reaches no Python package index (only Debian's packages,
which lack transformers), so this script carries its own copy of the two forward passes, written line for line after
transformers' modeling_gpt2.py (GPT2Attention._attn, Conv1D, NewGELUActivation) and modeling_llama.py (LlamaRMSNorm,
LlamaRotaryEmbedding, rotate_half / apply_rotary_pos_emb, repeat_kv, LlamaMLP), with the parameter names and shapes of
GPT2LMHeadModel and LlamaForCausalLM, and writes the folders as save_pretrained does (config.json, safetensors with
{"format": "pt"} metadata, tokenizer files). Where transformers is installed, check_hf_export.py compares against it.

Outputs per folder: the checkpoint plus expected.json: {"input_ids": [[...]], "logits": [[[...]]] (first vocab_size
columns, float32), "prompt": str, "prompt_ids": [...], "greedy_ids": [...] (greedy continuation, max_new_tokens)}.
"""
import json
import math
import os
import struct

import regex as re
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..", "Microsoft.ML.Llm.Tests", "Fixtures", "hf")

# ----------------------------------------------------------------------------------------------- tokenizer (GPT-2 BPE)

GPT2_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_TO_CHAR = bytes_to_unicode()


def train_bpe(text, merges_wanted):
    """A plain BPE trainer over GPT-2 pre-tokenized words: repeatedly merge the most frequent pair (ties: first seen)."""
    words = {}
    for piece in GPT2_PATTERN.findall(text):
        key = tuple(BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))
        words[key] = words.get(key, 0) + 1
    merges = []
    for _ in range(merges_wanted):
        counts = {}
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + freq
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: kv[1])[0]   # ties: the pair seen first (dict order)
        merges.append(best)
        merged = {}
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + freq
        words = merged
    return merges


def bpe_encode(text, vocab, merges):
    """openai/gpt-2 encoder.py's bpe(): merge the lowest-ranked pair until none applies."""
    ranks = {pair: i for i, pair in enumerate(merges)}
    ids = []
    for piece in GPT2_PATTERN.findall(text):
        word = [BYTE_TO_CHAR[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, i = min(pairs)
            if rank == math.inf:
                break
            first, second = word[i], word[i + 1]
            out, j = [], 0
            while j < len(word):
                if j < len(word) - 1 and word[j] == first and word[j + 1] == second:
                    out.append(first + second)
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            word = out
        ids.extend(vocab[t] for t in word)
    return ids


CORPUS = ("The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs! "
          "Hugging Face checkpoints load into ML.NET. Tokens, tensors and transformers: 123 456 7890. ") * 3


def make_tokenizer():
    merges = train_bpe(CORPUS, 40)
    tokens = [BYTE_TO_CHAR[b] for b in range(256)] + [a + b for a, b in merges] + ["<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate token"
    return vocab, merges


# ----------------------------------------------------------------------------------------------- safetensors writer

DTYPES = {torch.float32: ("F32", torch.int32), torch.bfloat16: ("BF16", torch.int16), torch.float16: ("F16", torch.int16)}


def save_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        code, int_type = DTYPES[t.dtype]
        data = t.view(int_type).numpy().tobytes()   # raw little-endian bytes (numpy has no bfloat16)
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# ----------------------------------------------------------------------------------------------- GPT-2 (modeling_gpt2.py)

def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gpt2_forward(sd, cfg, ids):
    n_embd, n_head = cfg["n_embd"], cfg["n_head"]
    hs = n_embd // n_head
    B, T = ids.shape
    x = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][torch.arange(T)]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        conv1d = lambda h, name: torch.addmm(sd[p + name + ".bias"], h.view(-1, h.size(-1)), sd[p + name + ".weight"]).view(*h.shape[:-1], -1)
        h = torch.nn.functional.layer_norm(x, (n_embd,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], cfg["layer_norm_epsilon"])
        q, k, v = conv1d(h, "attn.c_attn").split(n_embd, dim=2)
        q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
        w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5)
        w = torch.where(causal, w, torch.full([], torch.finfo(w.dtype).min))
        w = torch.softmax(w, dim=-1)
        a = torch.matmul(w, v).transpose(1, 2).contiguous().view(B, T, n_embd)
        x = x + conv1d(a, "attn.c_proj")
        h = torch.nn.functional.layer_norm(x, (n_embd,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], cfg["layer_norm_epsilon"])
        x = x + conv1d(gelu_new(conv1d(h, "mlp.c_fc")), "mlp.c_proj")
    x = torch.nn.functional.layer_norm(x, (n_embd,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], cfg["layer_norm_epsilon"])
    return x @ sd["transformer.wte.weight"].T   # lm_head tied to wte


# ----------------------------------------------------------------------------------------------- Llama (modeling_llama.py)

def rms_norm(x, weight, eps):
    input_dtype = x.dtype
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return weight * x.to(input_dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def llama_forward(sd, cfg, ids):
    C, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hs = C // nh
    B, T = ids.shape
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hs, 2, dtype=torch.int64).float() / hs))
    freqs = torch.arange(T).float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, sd[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(B, T, nh, hs).transpose(1, 2)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).view(B, T, nkv, hs).transpose(1, 2)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).view(B, T, nkv, hs).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = nh // nkv   # repeat_kv
        k = k[:, :, None].expand(B, nkv, rep, T, hs).reshape(B, nh, T, hs)
        v = v[:, :, None].expand(B, nkv, rep, T, hs).reshape(B, nh, T, hs)
        w = torch.matmul(q, k.transpose(2, 3)) * hs ** -0.5
        w = w.masked_fill(~causal, torch.finfo(w.dtype).min)
        w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        a = torch.matmul(w, v).transpose(1, 2).reshape(B, T, C)
        x = x + a @ sd[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, sd[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
        gate = torch.nn.functional.silu(h @ sd[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ sd[p + "mlp.up_proj.weight"].T)) @ sd[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, sd["model.norm.weight"], cfg["rms_norm_eps"])
    return x @ sd["lm_head.weight"].T   # untied head


# ----------------------------------------------------------------------------------------------- fixtures

def greedy(forward, sd, cfg, prompt_ids, new_tokens, vocab_size):
    ids = list(prompt_ids)
    for _ in range(new_tokens):
        logits = forward(sd, cfg, torch.tensor([ids]))[0, -1, :vocab_size]
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt_ids):]


def expected(forward, sd, cfg, vocab, merges, vocab_size):
    torch.manual_seed(1)
    input_ids = torch.randint(0, vocab_size, (2, 12))
    with torch.no_grad():
        logits = forward(sd, cfg, input_ids)[:, :, :vocab_size]
        prompt = "The quick brown fox"
        prompt_ids = bpe_encode(prompt, vocab, merges)
        return {
            "input_ids": input_ids.tolist(),
            "logits": [[[float(v) for v in row] for row in seq] for seq in logits],
            "prompt": prompt,
            "prompt_ids": prompt_ids,
            "tokenized_corpus": bpe_encode("The fox sleeps. 123 tensors!", vocab, merges),
            "greedy_ids": greedy(forward, sd, cfg, prompt_ids, 10, vocab_size),
        }


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)


def random_weights(shapes, seed, scale):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight") or ".ln_" in name and name.endswith(".weight") or name.endswith("ln_f.weight"):
            sd[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[name] = scale * torch.randn(shape, generator=g)
    return sd


def make_gpt2(vocab, merges):
    V, C, L, H, P = len(vocab), 32, 2, 4, 32
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V, "n_positions": P, "n_ctx": P,
           "n_embd": C, "n_layer": L, "n_head": H, "n_inner": None, "activation_function": "gelu_new",
           "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "initializer_range": 0.02,
           "scale_attn_weights": True, "bos_token_id": V - 1, "eos_token_id": V - 1, "torch_dtype": "float32"}
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (P, C),
              "transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)}
    for i in range(L):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,), p + "attn.c_attn.weight": (C, 3 * C),
                       p + "attn.c_attn.bias": (3 * C,), p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                       p + "ln_2.weight": (C,), p + "ln_2.bias": (C,), p + "mlp.c_fc.weight": (C, 4 * C),
                       p + "mlp.c_fc.bias": (4 * C,), p + "mlp.c_proj.weight": (4 * C, C), p + "mlp.c_proj.bias": (C,)})
    sd = random_weights(shapes, seed=13, scale=0.2)
    folder = os.path.join(ROOT, "gpt2-tiny")
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "config.json"), cfg)
    save_safetensors(os.path.join(folder, "model.safetensors"), sd)
    write_json(os.path.join(folder, "vocab.json"), vocab)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    write_json(os.path.join(folder, "tokenizer_config.json"), {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
               "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "model_max_length": P})
    write_json(os.path.join(folder, "generation_config.json"), {"bos_token_id": V - 1, "eos_token_id": V - 1})
    write_json(os.path.join(folder, "expected.json"), expected(gpt2_forward, sd, cfg, vocab, merges, V))


def make_llama(vocab, merges):
    V, C, L, H, KV, I, P = len(vocab), 32, 2, 4, 2, 64, 64
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "max_position_embeddings": P,
           "hidden_size": C, "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": KV, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 5000.0, "rope_scaling": None,
           "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False,
           "bos_token_id": V - 1, "eos_token_id": V - 1, "torch_dtype": "bfloat16"}
    hs = C // H
    shapes = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,), "lm_head.weight": (V, C)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (C,), p + "self_attn.q_proj.weight": (C, C),
                       p + "self_attn.k_proj.weight": (KV * hs, C), p + "self_attn.v_proj.weight": (KV * hs, C),
                       p + "self_attn.o_proj.weight": (C, C), p + "post_attention_layernorm.weight": (C,),
                       p + "mlp.gate_proj.weight": (I, C), p + "mlp.up_proj.weight": (I, C), p + "mlp.down_proj.weight": (C, I)})
    # Stored as bfloat16 (as most Llama checkpoints): the reference runs on the bf16 values widened to fp32, which is
    # what a loader that converts to fp32 computes.
    sd = {k: v.to(torch.bfloat16) for k, v in random_weights(shapes, seed=29, scale=0.2).items()}
    folder = os.path.join(ROOT, "llama-tiny")
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "config.json"), cfg)
    # Two shards with an index, as save_pretrained(max_shard_size=...) writes them.
    names = sorted(sd)
    first = {n: sd[n] for n in names if n.startswith("model.layers.0.") or n == "model.embed_tokens.weight"}
    second = {n: sd[n] for n in names if n not in first}
    shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    for shard, part in zip(shard_names, (first, second)):
        save_safetensors(os.path.join(folder, shard), part)
    total = sum(t.numel() * 2 for t in sd.values())
    write_json(os.path.join(folder, "model.safetensors.index.json"), {"metadata": {"total_size": total},
               "weight_map": {n: shard_names[0] if n in first else shard_names[1] for n in names}})
    tokenizer = {"version": "1.0", "truncation": None, "padding": None,
                 "added_tokens": [{"id": V - 1, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
                                   "normalized": False, "special": True}],
                 "normalizer": None,
                 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
                 "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                 "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                 "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                           "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                           "vocab": {t: i for t, i in vocab.items() if t != "<|endoftext|>"}, "merges": [[a, b] for a, b in merges]}}
    write_json(os.path.join(folder, "tokenizer.json"), tokenizer)
    write_json(os.path.join(folder, "tokenizer_config.json"), {"tokenizer_class": "PreTrainedTokenizerFast",
               "eos_token": "<|endoftext|>", "model_max_length": P, "clean_up_tokenization_spaces": False})
    write_json(os.path.join(folder, "generation_config.json"), {"bos_token_id": V - 1, "eos_token_id": [V - 1]})
    sd32 = {k: v.to(torch.float32) for k, v in sd.items()}
    write_json(os.path.join(folder, "expected.json"), expected(llama_forward, sd32, cfg, vocab, merges, V))


if __name__ == "__main__":
    vocab, merges = make_tokenizer()
    make_gpt2(vocab, merges)
    make_llama(vocab, merges)
    print("wrote", ROOT)
