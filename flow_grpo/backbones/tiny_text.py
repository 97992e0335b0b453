"""Tokenizers for tiny models built in code (nothing is downloaded): a WordPiece vocabulary of whole words
(the GenEval classes, colours, counts, relations, shapes and common prompt words) that falls back to single
characters for any other word, wrapped in transformers' ``PreTrainedTokenizerFast``. ``kind`` selects the
special tokens of the tokenizer it stands in for: CLIP's ``<s> ... </s>``, T5's ``... </s>``, or Qwen2's chat
template tokens (``<|im_start|>``, ``<|im_end|>`` and the newline as tokens of their own, so that Qwen-Image's
template prefix is 34 tokens long, as with the real tokenizer).
"""

from __future__ import annotations

import string

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<s>")
PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, 3

# Whole-word vocabulary: prompt grammar words, GenEval's 80 COCO classes (split into words), its colours,
# counts in words, relations, and the shapes world's shapes. Any other word is spelled in characters.
_WORDS = """
a an the of and with on in at to is are photo picture image scene drawing painting sign text that says
written reads saying logo poster book cover label one two three four five six seven eight nine ten eleven
twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty zero no
left right above below top bottom next near behind front side middle center
red orange yellow green blue purple pink brown black white gray grey
circle circles square squares triangle triangles star stars hexagon hexagons diamond diamonds cross crosses
heart hearts ring rings
person people bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop
parking meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie
suitcase frisbee skis snowboard sports ball kite baseball bat glove skateboard surfboard tennis racket
bottle wine glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot pizza donut cake
chair couch potted plant bed dining table toilet tv laptop computer mouse remote keyboard cell phone
microwave oven toaster sink refrigerator clock vase scissors teddy hair drier toothbrush
persons bicycles cars motorcycles airplanes buses trains trucks boats lights hydrants signs meters benches
birds cats dogs horses sheep cows elephants bears zebras giraffes backpacks umbrellas handbags ties
suitcases frisbees snowboards balls kites bats gloves skateboards surfboards rackets bottles glasses cups
forks knives spoons bowls bananas apples sandwiches oranges carrots pizzas donuts cakes chairs couches
plants beds tables toilets tvs laptops computers mice remotes keyboards phones microwaves ovens toasters
sinks refrigerators clocks vases teddies driers toothbrushes
big small large tiny beautiful high quality detailed realistic style art old new
""".split()


# Qwen-Image's prompt template (diffusers' QwenImagePipeline.prompt_template_encode) in whole words
_TEMPLATE_WORDS = """
system describe image by detailing color shape size texture quantity text spatial relationships objects background
user assistant
""".split()
QWEN_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "\n")


def _vocabulary(kind: str = "clip") -> dict[str, int]:
    """The words of every kind, then (``"qwen"``) the template's words; the chat tokens are added after these."""
    tokens = list(SPECIAL_TOKENS)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens += list(chars) + ["##" + c for c in chars]
    for word in _WORDS + (_TEMPLATE_WORDS if kind == "qwen" else []):
        if word not in tokens:
            tokens.append(word)
    return {token: i for i, token in enumerate(tokens)}


def vocabulary_size(kind: str = "clip") -> int:
    """Every id of a tokenizer of this kind is below this."""
    return len(_vocabulary(kind)) + (len(QWEN_SPECIAL_TOKENS) if kind == "qwen" else 0)


def make_tokenizer(kind: str, model_max_length: int):
    """A word-level tokenizer with character fallback: ``kind`` ``"clip"`` adds <s> ... </s>, ``"t5"`` adds </s>,
    ``"qwen"`` adds nothing and knows the chat template's tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = _vocabulary(kind)
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=64))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()
    if kind == "clip":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)]
        )
        bos = {"bos_token": "<s>"}
    elif kind == "t5":
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS_ID)])
        bos = {}
    elif kind == "qwen":
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS])
        bos = {}
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; valid: clip, t5, qwen")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        **bos,
    )
