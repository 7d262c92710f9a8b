"""Documents to words: spaCy tokenisation, vocabulary, encoding, word-level relevance, rendering."""

from lrptext.text.document import DocumentExplanation, Word
from lrptext.text.tokens import Token, Tokenizer
from lrptext.text.vocab import Vocabulary

__all__ = ["DocumentExplanation", "Token", "Tokenizer", "Vocabulary", "Word"]
