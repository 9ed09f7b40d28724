"""Tiny randomly initialised parts, built from a config and saved as ordinary local model
folders, so that tests and the CPU run go through the same loading code as real weights:
a T5-family text encoder with a tokenizer trained here on the taxonomy's words, and a
Wan-style video VAE. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch


def build_text_encoder(out: str | Path, d_model: int = 64, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel
    from transformers.utils import logging as hf_logging

    import taxonomy

    hf_logging.disable_progress_bar()  # its "Writing model shards" bar: the command draws its own

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tax = taxonomy.load()
    corpus = [f"{t.label}. {t.definition}" for ax in tax.axes.values() for t in ax.tags]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(
        corpus, trainers.UnigramTrainer(vocab_size=800, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    )
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = UMT5Config(
        vocab_size=len(fast),
        d_model=d_model,
        d_kv=16,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        decoder_start_token_id=0,
    )
    UMT5EncoderModel(cfg).save_pretrained(out)
    return out


def build_wan_vae(out: str | Path, z_dim: int = 4, seed: int = 0) -> Path:
    """A 0.8M-parameter AutoencoderKLWan: 4x temporal, 8x spatial compression."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=16,
        z_dim=z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    vae.save_pretrained(out)  # type: ignore[attr-defined]  # (mypy sees diffusers' dummy placeholder class)
    return Path(out)
