"""Pruning methods and their machinery: ``magnitude`` (unstructured), ``structured`` (heads and
FFN neurons), ``sparse_storage`` (what a pruned model looks like on disk)."""
