"""The text encoder: a sentence model, tokenised here with `tokenizers`."""

from __future__ import annotations

import time

import numpy as np

from ..errors import InvalidArgument
from ..limits import MAX_TEXT
from . import model_repo
from .runners import runner


class TextEncoder:
    """An exported sentence model, tokenised here with `tokenizers`."""

    kind = "text"

    def __init__(self, folder: str, threads: int | None = None, triton: str | None = None, spin: bool = False):
        from tokenizers import Tokenizer
        meta = model_repo.read_meta(folder)
        self.name = meta["name"]
        self.dim = int(meta["dim"])
        self.max_tokens = int(meta.get("max_tokens", 128))
        self.tokenizer = Tokenizer.from_file(model_repo.tokenizer_path(folder))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.enable_padding()
        self.runner = runner(folder, threads, triton, spin)
        self.remote = None   # Triton's text_pipeline, when it serves one: titles go there as text
        if triton:
            from .runners import TritonRunner
            try:
                self.remote = TritonRunner(triton, model_repo.TEXT_PIPELINE)
            except ConnectionError:
                pass

    def embed(self, texts) -> np.ndarray:
        if self.remote is not None:
            return self.remote.run({"text": np.array([[t.encode()] for t in texts], dtype=object)})
        enc = self.tokenizer.encode_batch(list(texts))
        feed = {"input_ids": np.asarray([e.ids for e in enc], np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in enc], np.int64)}
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])   # BERT-style graphs take it
        return self.runner.run(feed)

    def embed_request(self, text: str, timings=None) -> np.ndarray:
        if not text.strip():
            raise InvalidArgument("the text query is empty")
        if len(text) > MAX_TEXT:
            raise InvalidArgument(f"text longer than {MAX_TEXT} characters")
        t0 = time.perf_counter_ns()
        v = self.embed([text])[0]
        if timings is not None:
            timings.encode_us = (time.perf_counter_ns() - t0) // 1000
        return v

    def warm_up(self) -> None:
        self.embed(["warm up"])
