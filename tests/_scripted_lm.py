"""A tiny causal LM that writes one given text, whatever it is asked: a real Llama model run
by transformers (batched and streamed generation alike), with weights set by hand instead
of trained. Importable as ``from _scripted_lm import scripted_lm``.

How: its layers add nothing (their output projections are zero), so the logits at a position
depend only on that position's token; the output head maps each token of the text (and the
last token of every chat prompt) to the next one, and the last one to end-of-sequence. So
greedy decoding walks the pieces in order, which must therefore all differ.
"""

from __future__ import annotations

from pathlib import Path

_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def scripted_lm(out: Path, pieces: list[str], loop: bool = False) -> Path:
    """Save to ``out`` a tiny LM whose every greedy chat completion is ``"".join(pieces)``,
    one token a piece (so streamed in those pieces, give or take the streamer's wait for a
    word's end); ``loop``: the pieces again and again, until ``max_new_tokens``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Seen often and never split, each piece becomes one token.
    tk.train_from_iterator([*pieces, "<|assistant|>"] * 50, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>", pad_token="<pad>")
    tok.chat_template = _CHAT_TEMPLATE
    start = tok.apply_chat_template([{"role": "user", "content": "?"}],
                                    add_generation_prompt=True, tokenize=True,
                                    return_dict=True)["input_ids"][-1]
    ids = [tok.encode(p, add_special_tokens=False) for p in pieces]
    if any(len(i) != 1 for i in ids) or len({i[0] for i in ids} | {start}) != len(ids) + 1:
        raise ValueError(f"{pieces!r}: a scripted LM needs distinct pieces, one token each")
    chain = [start, *(i[0] for i in ids), ids[0][0] if loop else tok.eos_token_id]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        head = model.lm_head.weight
        head.zero_()
        for here, after in zip(chain, chain[1:], strict=False):
            head[after] += 10 * embed[here] / embed[here].norm()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
