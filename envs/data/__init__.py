"""Data shipped with aligngym: prompt sets (JSONL), the corpus, the default tokenizer and small model weights.

All text here was written for aligngym. ``build_corpus.py`` and ``build_tokenizer.py`` rebuild the generated files.
"""
