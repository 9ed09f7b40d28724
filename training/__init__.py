"""The dual-channel generator, its shard loader, curriculum and DPO stage."""
