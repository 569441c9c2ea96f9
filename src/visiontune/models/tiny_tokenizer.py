"""A small byte-level BPE tokenizer built locally, for tiny test models.

Byte-level BPE encodes any text (no unknown tokens), so a tiny model built on it can be trained
and evaluated on any caption; the learned merges just make common English words short.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# A plain English corpus for the merges: caption-like vocabulary plus common function words.
_CORPUS_WORDS = """
a an the of and or in on at to with without from by for is are was were be been this that these those
it its there here one two three four five six seven eight nine ten many few some several small large big
tiny huge little red green blue yellow orange purple pink brown black white gray grey dark light bright
circle square triangle rectangle star line dot stripe shape shapes object objects background foreground
left right top bottom middle center corner above below next near far beside between behind front
photo picture image of a dog cat bird horse car bus truck train boat plane bike person man woman child
people group standing sitting walking running playing eating holding looking riding street road grass
tree trees sky water table room kitchen food plate pizza sandwich cake ball frisbee kite umbrella sign
answer question reasoning describe caption class label none not present yes no what which where how
user assistant system you are helpful
""".split()


def build_tiny_tokenizer(special_tokens: list[str], vocab_size: int = 1024) -> Tokenizer:
    """Train a byte-level BPE on a fixed corpus; `special_tokens` get the first ids, in order."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    sentences = [" ".join(_CORPUS_WORDS[i : i + 12]) for i in range(0, len(_CORPUS_WORDS), 12)]
    # Repeat with capitalised variants so sentence-initial words merge too.
    corpus = sentences * 4 + [s.capitalize() for s in sentences] * 2 + [w.capitalize() for w in _CORPUS_WORDS]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer
