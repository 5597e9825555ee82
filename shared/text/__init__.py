"""Tokenizers from local files, pinyin, prompt assembly."""
