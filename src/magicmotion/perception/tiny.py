"""Tiny random perception models built in code (no downloads), for tests and smoke runs: a Grounding
DINO (tiny Swin backbone, tiny BERT text encoder, a word-piece tokenizer over a few words) and a SAM 2
video model (tiny Hiera backbone). Their answers are random; they exercise the real code paths.
"""

from __future__ import annotations

# Words the tiny Grounding DINO tokenizer knows (others become [UNK]).
GROUNDING_WORDS = [
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "circle", "square",
    "triangle", "diamond", "hexagon", "star", "cross", "dog", "cat", "man", "woman", "car", "ball",
    "bird", "person", "brown", "white", "black",
]


def seeded(model_class, config, seed: int):
    """model_class(config) in eval mode, its random weights drawn from `seed` (the global torch RNG
    is left as it was)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config).eval()


def tiny_grounding_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *GROUNDING_WORDS]
    tk = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return BertTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_grounding_dino(seed: int = 0, image_size: int = 64):
    """(GroundingDinoForObjectDetection with a tiny Swin backbone and BERT, its processor).

    d_model is 64, twice the 32 groups of the GroupNorm after each input projection: with d_model 32
    a group is one channel, and on a square image the last feature level is 1x1 (64 px / 4 / 2**4),
    so a batch of one image fails in F.group_norm ("Expected more than 1 value per channel when
    training", raised in eval mode too)."""
    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoProcessor, SwinConfig)

    try:  # without torchvision transformers falls back to the PIL image processor
        from transformers import GroundingDinoImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import GroundingDinoImageProcessor as ImageProcessor

    tok = tiny_grounding_tokenizer()
    backbone = SwinConfig(image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 1, 1], window_size=4,
                          out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=16, max_position_embeddings=64)
    cfg = GroundingDinoConfig(backbone_config=backbone, text_config=text, use_timm_backbone=False,
                              d_model=64, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=16,
                              decoder_ffn_dim=16, encoder_attention_heads=2,
                              decoder_attention_heads=2, num_queries=12, max_text_len=32,
                              encoder_n_points=1, decoder_n_points=1)
    model = seeded(GroundingDinoForObjectDetection, cfg, seed)
    image_processor = ImageProcessor(size={"shortest_edge": image_size,
                                           "longest_edge": image_size * 2})
    return model, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tok)


def tiny_sam2_video(seed: int = 0, image_size: int = 32):
    """A Sam2VideoModel with a 5-block Hiera backbone at `image_size` (a multiple of 32). Widths of
    128 and memory channels of 64 are the smallest the video model's memory path accepts."""
    from transformers import (Sam2HieraDetConfig, Sam2VideoConfig, Sam2VideoMaskDecoderConfig,
                              Sam2VideoModel, Sam2VideoPromptEncoderConfig, Sam2VisionConfig)

    s = int(image_size)
    f = s // 4
    backbone = Sam2HieraDetConfig(
        hidden_size=8, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                              backbone_feature_sizes=[[f, f], [f // 2, f // 2], [f // 4, f // 4]],
                              fpn_hidden_size=128)
    prompt = Sam2VideoPromptEncoderConfig(hidden_size=128, image_size=s, patch_size=16,
                                          mask_input_channels=8)
    decoder = Sam2VideoMaskDecoderConfig(hidden_size=128, mlp_dim=32, num_hidden_layers=1,
                                         num_attention_heads=2, iou_head_hidden_dim=16)
    cfg = Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder,
        image_size=s, num_maskmem=2, memory_attention_hidden_size=128,
        memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=32,
        memory_attention_rope_feat_sizes=[f // 4, f // 4], memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=32,
        max_object_pointers_in_encoder=4)
    model = seeded(Sam2VideoModel, cfg, seed)
    return model
