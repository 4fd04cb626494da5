"""Writes tests/fidelity/embed_reference.json: 200 varied texts and their sentence-transformers embeddings with the
default model (all-MiniLM-L6-v2 from models/, as scripts/fetch-models.sh puts it). Run once by hand; sentence-
transformers pulls torch, too large for every CI run, so the vectors are committed.
Usage: python3 tests/fidelity/embed_reference.py"""

import json
import os
import random

from sentence_transformers import SentenceTransformer

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
model = SentenceTransformer(os.path.join(root, "models/sentence-transformers/all-MiniLM-L6-v2"), device="cpu")

rng = random.Random(11)
words = ("postgres proxy shard replica model vector embedding pooling query latency throughput index search "
         "database transaction commit rollback cache memory thread network").split()
texts = ["", " ", "a", "Hello, world!", "PostgreSQL", "🐈‍⬛🚀👍🏽", "数据库连接池", "Ünïcödé çhàrs", "1234567890",
         "SELECT * FROM t WHERE id = 1;"]
while len(texts) < 150:
    n = rng.choice([3, 8, 20, 60])
    texts.append(" ".join(rng.choice(words) for _ in range(n)))
# Long texts, past the model's 256-token truncation.
while len(texts) < 170:
    texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(300, 600))))
# Chinese, Japanese, Arabic, emoji runs, mixed.
samples = ["在代理里做机器学习推理。", "ベクトル検索とシャーディング", "قاعدة البيانات", "🙂🙃😉" * 5,
           "mixed 中文 and English 和 emoji 🎉", "tab\tseparated\tvalues", "line\nbreaks\nhere",
           "ALL CAPS SHOUTING", "punctuation!!! ??? ...", "   leading and trailing spaces   "]
while len(texts) < 200:
    texts.append(rng.choice(samples) * rng.randint(1, 4))
vectors = model.encode(texts, batch_size=32, convert_to_numpy=True)
with open(os.path.join(here, "embed_reference.json"), "w") as f:
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2", "texts": texts,
               "vectors": [[float(f"{x:.7g}") for x in v] for v in vectors]}, f, ensure_ascii=False)
print(len(texts), "texts,", vectors.shape[1], "dimensions")
