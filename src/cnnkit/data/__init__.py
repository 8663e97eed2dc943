"""Torch-free datasets as users have them: IDX files, image folders, splits, the decoded cache."""
