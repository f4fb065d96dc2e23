"""Fine-tuning: the loop, augmentation, validation, checkpoints and resume (``trainer``). It sits above
``core.search`` because a finished run is judged by the same ``Workspace`` the app serves.

Imports everything below it; only the CLI and the benchmarks import it."""
