"""The annotators' audit workbench: people, the append-only annotation store, queues,
agreement, and applying adjudicated labels back to the run (see ARCHITECTURE.md)."""
