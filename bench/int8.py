"""INT8 serving: the generator as torch dynamic INT8 (``models.quantize=int8``) and as a
CTranslate2 INT8 copy (``models.quantize=ct2-int8``), each against fp32 (``none``).

Three figures per model, and each INT8 model's ratios to fp32:

- tokens/s: greedy decoding of a fixed number of new tokens, median over several prompts and
  repeats, the models interleaved. This one is an in-process micro-measurement of the
  generator (``model.generate`` of ``models.load_generator``), not of the whole service.
- answer accuracy on the RAG bench's *test* families (``bench/rag_data``; nothing is tuned on
  them) in ``rag.mode=free``, where the generator writes the answer from the passages, and the
  agreement of each INT8 model's closed-book answers with fp32's (route ``adapter`` with no
  adapter: the base model alone). This part goes through the product's road: a live
  ``kinject serve`` per model, settings by environment (``KINJECT_MODELS__QUANTIZE``,
  ``KINJECT_RAG__MODE``), passages published with ``POST /v1/records`` and questions asked
  with ``POST /v1/ask``.
- memory: the resident set a fresh process gains by loading the model and writing one short
  answer (one child process per model, so one load does not hide in the other's pages).

    python bench/int8.py --quick --threads 1    # 14 questions; about 15 minutes on 2 busy cores
    python bench/int8.py --threads 1            # 56 questions
    python bench/int8.py --quick --modes ct2-int8   # fp32 against one INT8 model only

The last stdout line is one JSON object: ``fp32``, ``int8``, ``ct2_int8`` (tokens_per_s,
rss_mb, answers_right, answers_contain; the models measured), and per INT8 model under
``vs_fp32``: ``ratio`` (its figure / fp32's), ``accuracy_loss_points``,
``closed_book_agreement`` and ``free_agreement`` (share of questions whose two answers are the
same text) and ``verdict`` (whether it meets the bar: >= 1.5x tokens/s with <= 2 points
accuracy loss).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

from _common import emit, environment, median, parse_args, progress  # noqa: E402

MODES = ("none", "int8", "ct2-int8")
LABEL = {"none": "fp32", "int8": "int8", "ct2-int8": "ct2_int8"}
PROMPTS = (
    "Explain in a few sentences why the sky is blue.",
    "Write a short note inviting a colleague to lunch on Friday.",
    "List three things to check before a long bicycle ride.",
    "What does a lighthouse keeper do?",
    "Describe how to make a cup of tea.",
)


# --- tokens/s (in process) -----------------------------------------------------------------------


def tokens_per_s(folder: str, models_dir: Path, prompts: tuple[str, ...], new_tokens: int,
                 repeats: int, modes: tuple[str, ...]) -> dict[str, float]:
    """Median greedy tokens/s per model over ``prompts`` (each forced to ``new_tokens``)."""
    import torch

    from kinject.models import load_generator

    loaded = {q: load_generator(folder, models_dir, "cpu", "float32", q) for q in modes}
    speeds: dict[str, list[float]] = {q: [] for q in modes}
    for prompt in prompts:
        msgs = [{"role": "user", "content": prompt}]
        for r in range(repeats + 1):  # the first round warms up
            for q in (modes if r % 2 == 0 else modes[::-1]):  # interleaved, order alternating
                g = loaded[q]
                ids = g.tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                      return_tensors="pt", return_dict=True)
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    out = g.model.generate(**ids, max_new_tokens=new_tokens,
                                           min_new_tokens=new_tokens, do_sample=False,
                                           pad_token_id=g.tokenizer.pad_token_id)
                    seconds = time.perf_counter() - t0
                if r:
                    speeds[q].append((out.shape[1] - ids["input_ids"].shape[1]) / seconds)
        progress(f"tokens/s after {prompt[:30]!r}: "
                 + ", ".join(f"{LABEL[q]} {median(speeds[q]):.1f}" for q in modes))
    return {q: round(median(v), 2) for q, v in speeds.items()}


# --- memory (one child process per model) --------------------------------------------------------


def rss_child(folder: str, mode: str) -> None:
    """Print the MB of resident memory that loading the model adds to this process."""
    import ctranslate2  # noqa: F401  (the libraries' own pages are not the model's)
    import psutil
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from kinject.config import load_settings
    from kinject.models import load_generator

    proc = psutil.Process()
    before = proc.memory_info().rss
    g = load_generator(folder, load_settings().models_dir, "cpu", "float32", mode)
    import gc

    from kinject.rag.generate import generate_chat

    # One short answer first: an fp32 model's weights file is memory-mapped and only becomes
    # resident as a forward pass reads it.
    generate_chat(g, [{"role": "user", "content": "Who are you?"}], 8)
    gc.collect()
    print(json.dumps({"rss_mb": round((proc.memory_info().rss - before) / 2**20, 1),
                      "model": type(g.model).__name__}))


def rss_mb(folder: str, mode: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-child", mode, "--generator", folder],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])


# --- accuracy, through kinject serve -----------------------------------------------------------


def ask_all(url: str, questions: list[Any], route: str) -> list[str]:
    texts = []
    with httpx.Client(base_url=url, timeout=600) as c:
        for i, q in enumerate(questions):
            r = c.post("/v1/ask", json={"question": q.text, "route": route})
            r.raise_for_status()
            texts.append(r.json()["text"])
            if (i + 1) % 5 == 0:
                progress(f"  {route} {i + 1}/{len(questions)}")
    return texts


def serve_and_ask(data: Any, folder: str, mode: str, closed: bool = True
                  ) -> dict[str, list[str]]:
    """One ``kinject serve`` with ``KINJECT_MODELS__QUANTIZE=mode`` and ``rag.mode=free``:
    free-mode answers (route rag) and closed-book ones (route adapter, no adapter)."""
    from ask_load import start_server
    from kinject.config import load_settings
    from rag_quality import publish_and_wait

    os.environ["KINJECT_MODELS__QUANTIZE"] = mode
    os.environ["KINJECT_RAG__MODE"] = "free"
    key = "bench-" + secrets.token_urlsafe(16)
    args = types.SimpleNamespace(embedder="minilm", generator=folder)
    with tempfile.TemporaryDirectory(prefix="kinject-bench-int8-") as tmp:
        seen = load_settings(data_dir=Path(tmp), models={"generator": folder})
        assert seen.models.quantize == mode and seen.rag.mode == "free", "env not honoured"
        progress(f"{LABEL[mode]}: starting kinject serve")
        url, stop, thread = start_server(Path(tmp), args, key, {})  # type: ignore[arg-type]
        try:
            publish_and_wait(url, key, data.passages)
            free = ask_all(url, data.questions, "rag")
            return {"free": free,
                    "closed": ask_all(url, data.questions, "adapter") if closed else []}
        finally:
            stop.set()
            thread.join(60)


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 3) if flags else 0.0


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--generator", default="smollm2")
        p.add_argument("--threads", type=int, default=None,
                       help="torch threads (1 is much faster when other processes keep the "
                            "cores busy)")
        p.add_argument("--questions", type=int, default=None,
                       help="answerable questions per test family and language")
        p.add_argument("--modes", default="int8,ct2-int8",
                       help="the INT8 models to measure against fp32, comma-separated")
        p.add_argument("--rss-child", choices=MODES, default=None, help=argparse.SUPPRESS)
        p.add_argument("--skip-accuracy", action="store_true", help="tokens/s and memory only")
        p.add_argument("--free-only", action="store_true",
                       help="no closed-book answers (no closed_book_agreement): half the asks")

    args = parse_args(__doc__ or "", extra=extra, repeats=(2, 3))
    if args.rss_child:
        rss_child(args.generator, args.rss_child)
        return
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)  # CTranslate2 takes as many as torch has
    from ask_load import converted
    from kinject.config import load_settings

    quantized = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not quantized or any(m not in MODES[1:] for m in quantized):
        raise SystemExit(f"--modes takes some of {', '.join(MODES[1:])}, got {args.modes!r}")
    modes = ("none", *quantized)
    folder = converted(args.generator)
    models_dir = load_settings().models_dir
    prompts = PROMPTS[:3] if args.quick else PROMPTS
    new_tokens = 24 if args.quick else 48
    speed = tokens_per_s(folder, models_dir, prompts, new_tokens, args.repeats, modes)
    rss = {q: rss_mb(folder, q) for q in modes}
    progress(f"tokens/s {speed}, rss MB {rss}")

    result: dict[str, Any] = {"bench": "int8", "version": 2, "quick": args.quick,
                              "generator": args.generator, "new_tokens": new_tokens,
                              "prompts": len(prompts), "repeats": args.repeats}
    per: dict[str, dict[str, Any]] = {q: {"tokens_per_s": speed[q], "rss_mb": rss[q]}
                                      for q in modes}
    versus: dict[str, dict[str, Any]] = {q: {} for q in quantized}
    if not args.skip_accuracy:
        from rag_data.dataset import FULL, QUICK, Sizes, build, contains_expected, is_right
        from rag_data.families import TEST

        base = QUICK if args.quick else FULL
        sizes = Sizes(base.entities, args.questions or base.questions, 0)
        data = build(args.seed, sizes, TEST)
        questions = [q for q in data.questions if q.expected is not None]
        data = types.SimpleNamespace(passages=data.passages, questions=questions)
        progress(f"{len(TEST)} test families, {len(data.passages)} passages, "
                 f"{len(questions)} questions")
        answers = {q: serve_and_ask(data, folder, q, not args.free_only) for q in modes}
        for q in modes:
            per[q]["answers_right"] = _share([is_right(t, x) for t, x in
                                              zip(answers[q]["free"], questions, strict=True)])
            per[q]["answers_contain"] = _share(
                [contains_expected(t, x.expected) for t, x in
                 zip(answers[q]["free"], questions, strict=True)])
        result["questions"] = len(questions)
        for q in quantized:
            for kind in ("free",) if args.free_only else ("free", "closed"):
                name = "closed_book_agreement" if kind == "closed" else "free_agreement"
                versus[q][name] = _share([a.strip() == b.strip() for a, b in
                                          zip(answers["none"][kind], answers[q][kind],
                                              strict=True)])
            versus[q]["accuracy_loss_points"] = round(
                100 * (per["none"]["answers_right"] - per[q]["answers_right"]), 1)
        for i, x in enumerate(questions[:6]):
            progress(f"  {x.text} -> " + " | ".join(
                f"{LABEL[q]} {answers[q]['free'][i]!r}" for q in modes)
                + f" (want {x.expected})")
    for q in modes:
        result[LABEL[q]] = per[q]
    for q in quantized:
        ratio = {k: round(per[q][k] / per["none"][k], 2) if per["none"][k] else None
                 for k in per["none"]}
        loss = versus[q].get("accuracy_loss_points")
        versus[q]["ratio"] = ratio
        versus[q]["verdict"] = (
            f"{q} wins" if ratio["tokens_per_s"] >= 1.5 and loss is not None and loss <= 2
            else f"{q} does not meet the bar (>= 1.5x tokens/s, <= 2 points)")
    result["vs_fp32"] = versus
    progress(json.dumps({k: result[k] for k in (*(LABEL[q] for q in modes), "vs_fp32")}))
    result["env"] = environment()
    emit(result)

if __name__ == "__main__":
    main()
