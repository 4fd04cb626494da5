"""Reference chunks from LangChain's text splitters (PyPI langchain-text-splitters), the ones PostgresML's
pgml.chunk runs, for varied texts and arguments. Prints a JSON list of {splitter, kwargs, text, chunks}."""

import json
import random

from langchain_text_splitters import CharacterTextSplitter, RecursiveCharacterTextSplitter

rng = random.Random(7)
words = "the of and proxy shard model vector query server pool replica embedding chunk token".split()


def paragraph(n):
    return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."


texts = [
    "\n\n".join("\n".join(paragraph(rng.randint(5, 30)) for _ in range(rng.randint(1, 4))) for _ in range(8)),
    "在数据库前面放一个代理。它把查询路由到分片，并在代理里做机器学习推理。" * 6,
    "Emoji 🐈‍⬛ and flags 🇫🇷 mixed 👍🏽 with text.\n\n" * 5 + "The end 🚀",
    "",
    "tabs\tand  double  spaces\r\nwindows lines\r\n\r\n\n\n\nmany blank lines   \n   trailing   ",
    "x" * 130 + " " + "y" * 10,
]
settings = [
    ("recursive_character", {}),
    ("recursive_character", {"chunk_size": 100, "chunk_overlap": 20}),
    ("recursive_character", {"chunk_size": 40, "chunk_overlap": 10}),
    ("recursive_character", {"chunk_size": 50, "chunk_overlap": 0, "separators": [".", " ", ""]}),
    ("recursive_character", {"chunk_size": 30, "chunk_overlap": 5, "keep_separator": "end"}),
    ("recursive_character", {"chunk_size": 25, "chunk_overlap": 0, "strip_whitespace": False}),
    ("character", {}),
    ("character", {"chunk_size": 60, "chunk_overlap": 15, "separator": " "}),
    ("character", {"chunk_size": 80, "chunk_overlap": 0, "separator": "\n"}),
    ("character", {"chunk_size": 20, "chunk_overlap": 5, "separator": "", "strip_whitespace": False}),
]
cases = []
for splitter, kwargs in settings:
    cls = RecursiveCharacterTextSplitter if splitter == "recursive_character" else CharacterTextSplitter
    for text in texts:
        cases.append({"splitter": splitter, "kwargs": kwargs, "text": text, "chunks": cls(**kwargs).split_text(text)})
print(json.dumps(cases))
