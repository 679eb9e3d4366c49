"""storyopt_lib: the library behind chapter 7 (优化技术) of the story-model book.

Modules (each small enough to read in one sitting):

- ``initializers``: NumPy initializers of the chapter and ``init_weights`` for PyTorch modules.
- ``optimizers``: SGD/momentum/Nesterov, Adagrad, RMSprop, Adam, AdamW from scratch, checked
  against ``torch.optim``; parameter groups; ``create_optimizer``; ``state_bytes``.
- ``schedulers``: learning-rate schedules as pure functions of the step; the LR range test.
- ``surfaces``: 2-D loss surfaces (ill-conditioned quadratic, Rosenbrock) for trajectories.
- ``data``: a generated Chinese story corpus, a character tokenizer, datasets and loaders.
- ``model``: ``StorytellerModel``, a small causal GPT.
- ``training``: the mixed-precision training loop and exact resume; ``checkpoint`` (atomic,
  ``weights_only`` checkpoint files) and ``history`` (per-update records, plots, JSON) beside it.
- ``train``: the command line (``python -m storyopt_lib.train``), also under ``torchrun``.
- ``exercises``: checkers for the end-of-chapter exercises.
- ``diagnostics``: loss-landscape slices, per-layer statistics of deep MLPs, residual-stream scale.
- ``viz``: optimizer trajectories drawn over a surface's contours.
- ``notebook``: helpers for the book's pages (glue, progress bars, plot style).
"""

__version__ = "0.1.0"
