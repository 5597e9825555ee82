"""Two-way PyTorch/HF weight conversion: one name table per family drives import and export."""
