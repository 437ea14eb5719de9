"""Tiny random curation models built in code (no downloads), for tests and smoke runs: a chat
language model (Qwen2 with a byte-level tokenizer and a chat template), and perception's tiny
Grounding DINO and SAM 2 video model (`magicmotion.perception.tiny`). Their answers are random; they
exercise the real code paths.

`save_tiny_models(folder)` writes the three as model folders (llm/, grounding/, sam2/) for
`magicmotion data curate --llm folder/llm --grounding folder/grounding --sam2 folder/sam2`.
"""

from __future__ import annotations

from pathlib import Path

from ...perception.tiny import seeded, tiny_grounding_dino, tiny_sam2_video

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_chat_tokenizer():
    """A byte-level BPE tokenizer (256 bytes, no merges) with Qwen-style chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
                                   padding_side="left")


def tiny_language_model(seed: int = 0):
    """(Qwen2ForCausalLM with 2 layers of width 32, its tokenizer)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny_chat_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None, tie_word_embeddings=True)
    model = seeded(Qwen2ForCausalLM, cfg, seed)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def save_tiny_models(folder, seed: int = 0) -> dict[str, Path]:
    """Write the three tiny models as model folders; returns {"llm", "grounding", "sam2"} -> path.
    The SAM 2 folder has no processor files (they need torchvision); the tracker then uses its
    built-in preprocessing."""
    folder = Path(folder)
    paths = {k: folder / k for k in ("llm", "grounding", "sam2")}
    model, tok = tiny_language_model(seed)
    model.save_pretrained(paths["llm"])
    tok.save_pretrained(paths["llm"])
    model, processor = tiny_grounding_dino(seed)
    model.save_pretrained(paths["grounding"])
    processor.save_pretrained(paths["grounding"])
    tiny_sam2_video(seed).save_pretrained(paths["sam2"])
    return paths
