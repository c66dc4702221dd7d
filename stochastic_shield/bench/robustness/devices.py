"""Where the compiled artifacts of a robustness run classify images: locally, or split over the boards of a key."""
from __future__ import annotations

import contextlib
import math

import numpy as np



class Devices:
    """Where the compiled artifacts run: locally (one deployment per artifact, kept open), or on the
    boards of an RPC endpoint (every free board of a key, one session each, images split in threads)."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self._stack = contextlib.ExitStack()
        self._local = {}
        self.boards = self._count_boards()

    def _count_boards(self) -> int:
        from ...runtime_py.tracker import free_servers, require_key, tracker_summary

        ep = self.endpoint
        if ep.is_local or ep.key is None:
            return 1
        n = require_key(ep.address, ep.key)
        free = free_servers(tracker_summary(ep.address), ep.key)
        return max(1, free or n)  # all busy: ask for every board and queue

    def close(self):
        self._stack.close()

    def logits(self, artifact, x: np.ndarray, Ts, seed: int) -> dict[int, np.ndarray]:
        """{T: per-pass logits (N, T, K)} of ARTIFACT on images X (deterministic artifacts: T = 1 only)."""
        from ...runtime_py.runner import Deployment

        if self.endpoint.is_local:
            if artifact.path not in self._local:
                self._local[artifact.path] = self._stack.enter_context(Deployment(artifact))
            return passes(self._local[artifact.path], x, Ts, seed)
        # Whole static batches per board; every board draws the same masks for a seed (they do not
        # depend on the image), so the split does not change the result.
        nb = math.ceil(len(x) / artifact.batch)
        cuts = [artifact.batch * (nb * i // self.boards) for i in range(self.boards + 1)]
        chunks = [x[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]

        def one(chunk):
            with Deployment(artifact, self.endpoint) as dep:
                return passes(dep, chunk, Ts, seed)

        if len(chunks) == 1:
            return one(chunks[0])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = list(pool.map(one, chunks))
        return {t: np.concatenate([p[t] for p in parts]) for t in parts[0]}


def passes(dep, x, Ts, seed) -> dict[int, np.ndarray]:
    """{T: (N, T, K)} on one deployment; a deterministic one answers once, as T = 1."""
    if not dep.stochastic:
        return {1: dep.predict_logits(x)[:, None]}
    return {t: dep.mc_logits(x, t, seed) for t in Ts}
