"""The generic model server: loads verified parameters, serves predictions, applies policies."""
